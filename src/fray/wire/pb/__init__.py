"""Generated from proto/fray/wire/pb/ by scripts/generate_proto.sh: do not edit."""
