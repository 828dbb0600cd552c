"""Sign-In with Ethereum (EIP-4361): nonces, sessions, and the request's principal."""
