//! Which codec each peer speaks: the negotiated one shared with the media tasks, str0m's codec
//! names, and what we change in the browser's SDP (narrowband Opus).

use super::*;

pub(super) fn rtc_codec(codec: Codec) -> RtcCodec {
    match codec {
        Codec::Opus => RtcCodec::Opus,
        Codec::Pcmu => RtcCodec::PCMU,
        Codec::Pcma => RtcCodec::PCMA,
    }
}

pub(super) fn codec_of(codec: RtcCodec) -> Option<Codec> {
    match codec {
        RtcCodec::Opus => Some(Codec::Opus),
        RtcCodec::PCMU => Some(Codec::Pcmu),
        RtcCodec::PCMA => Some(Codec::Pcma),
        _ => None,
    }
}

/// Tell the browser our Opus needs no more than 8 kHz audio either way (RFC 7587
/// `maxplaybackrate` and `sprop-maxcapturerate`). Every call's audio is 8 kHz PCM here, so
/// wideband would only be decoded to be thrown away; told this, Chrome encodes narrowband,
/// which costs us a quarter of the decoding time (`callgate bench-codec` here: 5.8 against
/// 23.3 us a frame) and the browser less bandwidth. str0m has no such parameter, so
/// the answer's Opus `a=fmtp` lines get it here.
pub(super) fn opus_narrowband(sdp: &str) -> String {
    let opus_pts: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, name)| name.to_ascii_lowercase().starts_with("opus/"))
        .map(|(pt, _)| pt)
        .collect();
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.split_inclusive("\r\n") {
        let body = line.trim_end_matches("\r\n");
        let is_opus_fmtp = body
            .strip_prefix("a=fmtp:")
            .and_then(|rest| rest.split_once(' '))
            .is_some_and(|(pt, params)| {
                opus_pts.contains(&pt) && !params.contains("maxplaybackrate")
            });
        if is_opus_fmtp {
            out.push_str(body);
            out.push_str(";maxplaybackrate=8000;sprop-maxcapturerate=8000");
            out.push_str(&line[body.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The audio bandwidth an Opus packet's TOC byte announces (RFC 6716 section 3.1).
pub(super) fn opus_bandwidth(toc: u8) -> &'static str {
    match toc >> 3 {
        0..=3 | 16..=19 => "narrowband",
        4..=7 => "mediumband",
        8..=11 | 20..=23 => "wideband",
        12 | 13 | 24..=27 => "super-wideband",
        _ => "fullband",
    }
}

/// The mids of the offer's audio m-lines, in order.
pub(super) fn sdp_audio_mids(sdp: &str) -> Vec<String> {
    let mut mids = Vec::new();
    let mut in_audio = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(media) = line.strip_prefix("m=") {
            in_audio = media.starts_with("audio ");
        } else if in_audio {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                mids.push(mid.trim().to_string());
            }
        }
    }
    mids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_audio_mids() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        assert_eq!(sdp_audio_mids(sdp), vec!["0".to_string()]);
    }

    #[test]
    fn answers_ask_for_narrowband_opus_only() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\n\
                   a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n\
                   a=fmtp:0 foo=1\r\n";
        let out = opus_narrowband(sdp);
        assert!(out.contains(
            "a=fmtp:111 minptime=10;useinbandfec=1;maxplaybackrate=8000;sprop-maxcapturerate=8000\r\n"
        ));
        assert!(out.contains("a=fmtp:0 foo=1\r\n"), "PCMU untouched: {out}");
        assert_eq!(opus_narrowband(&out), out, "applied once");
        assert_eq!(out.len(), sdp.len() + 47);
    }

    #[test]
    fn opus_toc_names_the_bandwidth() {
        // Configs: 1 SILK NB 20 ms, 9 SILK WB 20 ms, 15 hybrid FB 20 ms, 19 CELT NB 20 ms,
        // 31 CELT FB 20 ms.
        for (config, want) in [
            (1u8, "narrowband"),
            (5, "mediumband"),
            (9, "wideband"),
            (13, "super-wideband"),
            (15, "fullband"),
            (19, "narrowband"),
            (31, "fullband"),
        ] {
            assert_eq!(opus_bandwidth(config << 3), want, "config {config}");
        }
    }

    #[test]
    fn reported_loss_is_kept_in_percent() {
        let shared = PeerCodec::default();
        assert_eq!(shared.loss_percent(), 0);
        shared.set_loss(0.051);
        assert_eq!(shared.loss_percent(), 5);
        shared.set_loss(7.0);
        assert_eq!(shared.loss_percent(), 100);
        shared.set_loss(f32::NAN);
        assert_eq!(shared.loss_percent(), 0);
    }

    #[test]
    fn peer_codec_round_trips() {
        let shared = PeerCodec::default();
        assert_eq!(shared.get(), None);
        for codec in [Codec::Opus, Codec::Pcmu, Codec::Pcma] {
            shared.set(Some(codec));
            assert_eq!(shared.get(), Some(codec));
        }
    }
}
