# Sourced by the SIP benches: echo_gateway_config DIR DATABASE prints a loopback gateway's
# config with the echo route and a trunk for 127.0.0.1 (SIP 15998, HTTP 15997, WebRTC 15996,
# RTP 40000-41999), its files in DIR.
echo_gateway_config() {
  cat <<TOML
admin_token_sha256 = "10a4c7c9fc5206d6f36dc6944a81bb6f4a3cb0e25014ae3b12e6c3e52712292a"
[sip]
listen = "127.0.0.1:15998"
[http]
listen = "127.0.0.1:15997"
[webrtc]
listen = "127.0.0.1:15996"
[rtp]
bind = "127.0.0.1"
port_min = 40000
port_max = 41999
[media]
hold_audio = "$PWD/config/hold.wav"
[recording]
directory = "$1/recordings"
[store]
database = "$2"
[[route]]
user = "echo"
action = "echo"
[[trunk]]
name = "local"
inbound_from = ["127.0.0.1/32"]
TOML
}
