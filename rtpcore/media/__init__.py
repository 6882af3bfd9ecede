"""Media: the leg plan, demultiplexing, RTP/RTCP parsing, SRTP decryption and stream statistics."""
