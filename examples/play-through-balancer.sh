#!/bin/sh
# Clients such as ffmpeg, OBS and VLC print an RTMP redirect and stop. Ask the balancer
# first, then hand the edge URL to the client:
#   examples/play-through-balancer.sh rtmp://lb.example.net:1935/redirect/mystream
set -eu
url=$(lbmgmt resolve "${1:?usage: $0 rtmp://balancer/redirect/stream}")
echo "playing from $url" >&2
exec ffmpeg -hide_banner -i "$url" -f null -
# Publishing works the same way:
#   ffmpeg -re -i input.mp4 -c copy -f flv "$(lbmgmt resolve rtmp://lb/redirect/mystream)"
