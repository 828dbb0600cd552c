"""Unsigned transactions a member signs with its own key: the service never holds members' keys.

A transaction is ``{to, data, value, chain_id, from, gas}``; the wallet fills in the nonce and
the fee fields. When a step needs a BPC allowance the member does not have, an ``approve`` comes
first, and the gas of the steps after it cannot be estimated until it is mined (the node would
simulate them without the allowance): their ``gas`` is null and ``after_previous`` is true.
When a step can be simulated, it is, so a transaction the contract would refuse is refused
here, with the contract's own error (``ChainRejected``), before the member pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange.chain.binding import BoundContract
from exchange.chain.errors import ChainError
from exchange.chain.problems import to_domain_error


@dataclass(frozen=True, slots=True)
class UnsignedTransaction:
    description: str
    chain_id: int
    sender: str
    to: str
    data: str
    value_wei: int
    gas: int | None
    after_previous: bool


def build(
    contract: BoundContract,
    function: str,
    args: list[Any],
    *,
    sender: str,
    chain_id: int,
    description: str,
    simulate: bool,
) -> UnsignedTransaction:
    """The call of `function(*args)` on `contract` from `sender`, simulated when `simulate`.

    Blocking (it asks the node for a gas estimate): run it off the event loop.
    """
    data = contract.contract.encode_abi(function, args)
    gas: int | None = None
    if simulate:
        bound = contract.contract.get_function_by_name(function)(*args)
        try:
            # The binding turns reverts into ContractReverted with the decoded custom error.
            gas = int(contract.guarded(lambda: bound.estimate_gas({"from": sender})))
        except ChainError as exc:
            raise to_domain_error(exc) from exc
    return UnsignedTransaction(
        description=description,
        chain_id=chain_id,
        sender=sender,
        to=contract.address,
        data=data,
        value_wei=0,
        gas=gas,
        after_previous=not simulate,
    )


def with_allowance(
    bpc: BoundContract,
    spender: BoundContract,
    amount_wei: int,
    *,
    sender: str,
    chain_id: int,
    then: tuple[str, list[Any], str],
) -> list[UnsignedTransaction]:
    """``approve`` when `sender`'s allowance for `spender` is below `amount_wei`, then the call `then`.

    `then` is ``(function, args, description)`` on `spender`.
    """
    function, args, description = then
    steps: list[UnsignedTransaction] = []
    try:
        allowance = int(bpc.call("allowance", sender, spender.address))
    except ChainError as exc:
        raise to_domain_error(exc) from exc
    if amount_wei and allowance < amount_wei:
        steps.append(
            build(
                bpc,
                "approve",
                [spender.address, amount_wei],
                sender=sender,
                chain_id=chain_id,
                description=f"allow {spender.name} to take {amount_wei} BPC base units",
                simulate=True,
            )
        )
    steps.append(
        build(
            spender,
            function,
            args,
            sender=sender,
            chain_id=chain_id,
            description=description,
            simulate=not steps,
        )
    )
    return steps
