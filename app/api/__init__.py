"""HTTP transport: request validation, error mapping and routing. No scoring logic lives here."""
