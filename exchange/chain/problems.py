"""The one mapping from chain errors to domain errors, for every service that talks to the chain.

``ContractReverted`` becomes ``ChainRejected`` (409) carrying the custom error's
name and arguments, so a client sees ``RegistryAlreadyMember(account)`` rather
than a stack trace; ``ChainUnavailable`` and ``DeploymentMismatch`` become
``ChainUnavailable`` (503): the node cannot serve the request as it stands.
"""

from __future__ import annotations

from exchange.chain.errors import ChainError, ContractReverted
from exchange.kit.errors import ChainRejected, ChainUnavailable, DomainError


def to_domain_error(exc: ChainError) -> DomainError:
    """The problem a client is shown for ``exc``."""
    if isinstance(exc, ContractReverted):
        where = f"{exc.contract} " if exc.contract else "the contract "
        return ChainRejected(
            f"{where}refused the transaction: {exc.error_name}",
            error_name=exc.error_name,
            error_args=exc.error_args,
            extra={"contract": exc.contract} if exc.contract else None,
        )
    return ChainUnavailable(f"the chain could not serve the request: {exc}")
