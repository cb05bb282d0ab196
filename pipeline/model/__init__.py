"""Records and contracts: the Avro schemas, raw messages, dead letters, business rules, the catalog."""
