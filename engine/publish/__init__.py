"""Where builds leave their results: the warehouse file, snapshots for the server, the gate, locks and durable writes."""
