//! Audio codecs on 20 ms frames of 8 kHz mono PCM: G.711 (our own tables) and Opus (libopus,
//! encoding straight from 8 kHz input so no resampler is needed). Knows payloads and PCM,
//! not packets or calls.

use crate::media::g711;
use crate::sdp::Codec;

/// Samples in one 20 ms frame at 8 kHz, the rate every call's PCM runs at.
pub const FRAME_SAMPLES: usize = 160;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

/// Opus bitrate while the far end reports loss. libopus adds in-band FEC (LBRR) only when the
/// rate leaves room for it: at complexity 1 and 1–25 % loss its threshold for narrowband lies
/// between 21 and 24.5 kb/s (`decide_fec` and `compute_equiv_rate` in opus_encoder.c), so
/// below that `useinbandfec` would be a promise the encoder never keeps.
pub const OPUS_FEC_BITRATE: i32 = 28_000;

pub enum Encoder {
    Pcmu,
    Pcma,
    Opus(Box<OpusEncoder>),
}

pub struct OpusEncoder {
    encoder: opus::Encoder,
    /// The packet loss (percent) the encoder currently plans for.
    expected_loss: u8,
}

impl Encoder {
    pub fn new(codec: Codec) -> Result<Encoder, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Encoder::Pcmu,
            Codec::Pcma => Encoder::Pcma,
            Codec::Opus => {
                let mut enc =
                    opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip)?;
                // FEC is allowed from the start but only produced once loss is reported
                // (`set_expected_loss`): on a clean path it would cost bits and about a
                // third more encoding time for nothing.
                enc.set_inband_fec(true)?;
                enc.set_packet_loss_perc(0)?;
                // Complexity 1 costs about a third of 5 here (21 vs 70 us per 20 ms frame,
                // measured on this kind of machine) for no audible loss on speech that was
                // 8 kHz telephone audio to begin with. Complexity 0 saves only 4-8 % more.
                enc.set_complexity(1)?;
                Encoder::Opus(Box::new(OpusEncoder {
                    encoder: enc,
                    expected_loss: 0,
                }))
            }
        })
    }

    /// RTP timestamp units one 20 ms frame spans at this codec's clock rate.
    pub fn frame_ticks(&self) -> u32 {
        match self {
            Encoder::Pcmu | Encoder::Pcma => 160,
            Encoder::Opus(_) => 960,
        }
    }

    /// Plan for the packet loss the receiver reports (percent, from its RTCP receiver
    /// reports). With loss, Opus carries each frame again at a lower rate inside the next
    /// packet (in-band FEC), and the bitrate rises to make room for it; without, both go back.
    /// G.711 has nothing to adapt.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError> {
        let Encoder::Opus(enc) = self else {
            return Ok(());
        };
        let percent = percent.min(100);
        if percent == enc.expected_loss {
            return Ok(());
        }
        enc.encoder.set_packet_loss_perc(i32::from(percent))?;
        enc.encoder.set_bitrate(if percent > 0 {
            opus::Bitrate::Bits(OPUS_FEC_BITRATE)
        } else {
            opus::Bitrate::Auto
        })?;
        enc.expected_loss = percent;
        Ok(())
    }

    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.clear();
        match self {
            Encoder::Pcmu => g711::encode_ulaw_into(pcm, out),
            Encoder::Pcma => g711::encode_alaw_into(pcm, out),
            Encoder::Opus(enc) => {
                out.resize(400, 0);
                let n = enc.encoder.encode(pcm, out)?;
                out.truncate(n);
            }
        }
        Ok(())
    }
}

pub enum Decoder {
    Pcmu,
    Pcma,
    Opus(Box<opus::Decoder>),
}

impl Decoder {
    pub fn new(codec: Codec) -> Result<Decoder, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Decoder::Pcmu,
            Codec::Pcma => Decoder::Pcma,
            Codec::Opus => Decoder::Opus(Box::new(opus::Decoder::new(8000, opus::Channels::Mono)?)),
        })
    }

    /// Decode one payload to 8 kHz PCM appended to `out`. An empty payload asks for packet
    /// loss concealment of one frame.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        match self {
            Decoder::Pcmu => g711::decode_ulaw_into(payload, out),
            Decoder::Pcma => g711::decode_alaw_into(payload, out),
            Decoder::Opus(dec) => {
                let start = out.len();
                // Concealment produces as many samples as there is room for: one frame.
                let room = if payload.is_empty() {
                    FRAME_SAMPLES
                } else {
                    FRAME_SAMPLES * 6
                };
                out.resize(start + room, 0);
                let n = dec.decode(payload, &mut out[start..], false)?;
                out.truncate(start + n);
            }
        }
        Ok(())
    }

    /// Rebuild a lost frame from the in-band FEC carried in the packet after it (Opus);
    /// other codecs conceal as for an empty payload.
    pub fn decode_fec(&mut self, next: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        match self {
            Decoder::Opus(dec) => {
                let start = out.len();
                out.resize(start + FRAME_SAMPLES, 0);
                let n = dec.decode(next, &mut out[start..], true)?;
                out.truncate(start + n);
                Ok(())
            }
            _ => self.decode(&[], out),
        }
    }
}

/// Whether an Opus packet carries in-band FEC (LBRR) for the one before it.
#[cfg(test)]
pub(crate) fn packet_has_fec(packet: &[u8]) -> bool {
    // SAFETY: the pointer and length describe one live slice; libopus only reads it.
    unsafe { opusic_sys::opus_packet_has_lbrr(packet.as_ptr(), packet.len() as i32) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32) -> Vec<i16> {
        (0..FRAME_SAMPLES)
            .map(|i| ((i as f32 * freq * std::f32::consts::TAU / 8000.0).sin() * 8000.0) as i16)
            .collect()
    }

    #[test]
    fn g711_frames_round_trip_closely() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut enc = Encoder::new(codec).expect("g711 encoder");
            let mut dec = Decoder::new(codec).expect("g711 decoder");
            let pcm = tone(440.0);
            let mut payload = Vec::new();
            enc.encode(&pcm, &mut payload).expect("encode");
            assert_eq!(payload.len(), FRAME_SAMPLES);
            let mut back = Vec::new();
            dec.decode(&payload, &mut back).expect("decode");
            let worst = pcm.iter().zip(&back).map(|(a, b)| (a - b).abs()).max();
            assert!(worst.unwrap_or(0) < 300, "{codec:?} error {worst:?}");
        }
    }

    #[test]
    fn opus_encodes_from_8khz_and_decodes_a_frame() {
        let mut enc = Encoder::new(Codec::Opus).expect("opus encoder");
        let mut dec = Decoder::new(Codec::Opus).expect("opus decoder");
        assert_eq!(enc.frame_ticks(), 960);
        let mut payload = Vec::new();
        let mut energy = 0f64;
        for _ in 0..10 {
            enc.encode(&tone(440.0), &mut payload).expect("encode");
            let mut pcm = Vec::new();
            dec.decode(&payload, &mut pcm).expect("decode");
            assert_eq!(pcm.len(), FRAME_SAMPLES);
            energy = pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>();
        }
        assert!(energy > 1e6, "decoded tone has energy {energy}");
    }

    fn has_fec(packet: &[u8]) -> bool {
        packet_has_fec(packet)
    }

    /// Voice-like frames. (libopus puts FEC only on frames its voice detector calls active,
    /// which a steady tone soon is not.)
    fn encode_voice(enc: &mut Encoder, frames: usize) -> Vec<Vec<u8>> {
        let pcm = crate::media::tones::voice(8000, frames);
        pcm.chunks(FRAME_SAMPLES)
            .map(|frame| {
                let mut payload = Vec::new();
                enc.encode(frame, &mut payload).expect("encode");
                payload
            })
            .collect()
    }

    #[test]
    fn opus_carries_fec_only_while_loss_is_reported() {
        let mut enc = Encoder::new(Codec::Opus).expect("opus encoder");
        let clean = encode_voice(&mut enc, 100);
        assert_eq!(
            clean.iter().filter(|p| has_fec(p)).count(),
            0,
            "no loss, no FEC"
        );
        enc.set_expected_loss(5).expect("loss");
        let lossy = encode_voice(&mut enc, 100);
        let with_fec = lossy.iter().filter(|p| has_fec(p)).count();
        assert!(
            with_fec >= 60,
            "only {with_fec} of 100 packets carry FEC at 5 % loss"
        );
        enc.set_expected_loss(0).expect("loss");
        let again = encode_voice(&mut enc, 100);
        let still = again.iter().skip(2).filter(|p| has_fec(p)).count();
        assert_eq!(still, 0, "FEC stops with the loss");
        // G.711 has nothing to adapt.
        let mut pcmu = Encoder::new(Codec::Pcmu).expect("pcmu");
        pcmu.set_expected_loss(20).expect("pcmu ignores loss");
    }

    #[test]
    fn opus_conceals_one_frame_and_recovers_from_fec() {
        let mut enc = Encoder::new(Codec::Opus).expect("opus encoder");
        enc.set_expected_loss(10).expect("loss");
        let mut dec = Decoder::new(Codec::Opus).expect("opus decoder");
        let mut packets = Vec::new();
        for _ in 0..6 {
            let mut payload = Vec::new();
            enc.encode(&tone(440.0), &mut payload).expect("encode");
            packets.push(payload);
        }
        let mut pcm = Vec::new();
        for p in &packets[..3] {
            dec.decode(p, &mut pcm).expect("decode");
        }
        let mut concealed = Vec::new();
        dec.decode(&[], &mut concealed).expect("plc");
        assert_eq!(concealed.len(), FRAME_SAMPLES, "concealment is one frame");
        // Frame 4 is lost too, but packet 5 carries it again.
        assert!(has_fec(&packets[5]), "packet 5 carries frame 4");
        let mut recovered = Vec::new();
        dec.decode_fec(&packets[5], &mut recovered).expect("fec");
        assert_eq!(recovered.len(), FRAME_SAMPLES);
        let rms = (recovered.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>()
            / FRAME_SAMPLES as f64)
            .sqrt();
        assert!(
            rms > 2000.0,
            "the recovered frame is the tone again: RMS {rms:.0}"
        );
    }
}
