#!/usr/bin/env bash
# Regenerates the shipped audio (license-free: synthesised here, no recordings of anyone).
#   config/announcement.wav  spoken test announcement (espeak-ng), 8 kHz mono 16-bit
#   config/hold.wav          soft major-seventh arpeggio loop (sox synth), 8 kHz mono 16-bit
# Needs: espeak-ng, sox.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng -s 150 -w "$tmp/speech.wav" \
  "This is the call gate announcement. Your trunk reaches the gateway. Goodbye."
sox "$tmp/speech.wav" -r 8000 -c 1 -b 16 config/announcement.wav norm -3 pad 0.2 0.3
# Four notes (C E G B), each a decaying sine, then a rest; repeated to ~8 s.
for f in 523.25 659.25 783.99 987.77; do
  sox -n -r 8000 -c 1 -b 16 "$tmp/n$f.wav" synth 0.5 sine "$f" fade q 0.02 0.5 0.35 vol 0.3
done
sox "$tmp"/n523.25.wav "$tmp"/n659.25.wav "$tmp"/n783.99.wav "$tmp"/n987.77.wav "$tmp/bar.wav" pad 0 0.5
sox "$tmp/bar.wav" "$tmp/bar.wav" "$tmp/bar.wav" "$tmp/bar.wav" config/hold.wav
sox --i config/announcement.wav
sox --i config/hold.wav
