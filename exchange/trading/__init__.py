"""Trading: order intake, the off-chain ledger, settlement on the Vault, market data.

``eip712`` builds the Vault's EIP-712 typed data (orders, withdrawal
authorisations) exactly as the contract hashes them; ``amounts`` mirrors the
contract's price and fee arithmetic to the base unit.
"""
