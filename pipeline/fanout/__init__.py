"""Who gets what: unit routing, subscriber matching, account digests."""
