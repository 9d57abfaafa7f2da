"""Felix's kernel drivers: the only code that touches nftables, routes, sysctls and conntrack."""
