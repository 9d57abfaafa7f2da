"""Felix's pure nftables rendering: messages in, nft chain/set/map descriptions out (no I/O)."""
