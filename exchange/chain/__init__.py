"""The chain seam: compile, deploy and call the pool contracts through web3.

Nothing outside this package touches web3 exceptions: every revert becomes a
:class:`~exchange.chain.errors.ContractReverted` carrying the contract's custom
error name and arguments.
"""
