"""The life of one worker generation as named states and the one table of legal moves.

A generation is STARTING from the moment its process is spawned, READY once it says so on
the channel (or its readiness probe succeeded, or it was guessed ready after `--ready-after`
alive), RETIRING once memwarden has decided to
stop it (TERM, grace, KILL), and EXITED once its exit has been reaped. Any state may end in
EXITED because a process can die at any moment; nothing comes back from EXITED.
"""

from __future__ import annotations

import enum


class GenerationState(enum.Enum):
    """Where one generation of a worker is in its life."""

    STARTING = "starting"
    READY = "ready"
    RETIRING = "retiring"
    EXITED = "exited"


#: Legal moves. STARTING -> RETIRING covers a start abandoned after the ready timeout.
TRANSITIONS: dict[GenerationState, frozenset[GenerationState]] = {
    GenerationState.STARTING: frozenset(
        {GenerationState.READY, GenerationState.RETIRING, GenerationState.EXITED}
    ),
    GenerationState.READY: frozenset({GenerationState.RETIRING, GenerationState.EXITED}),
    GenerationState.RETIRING: frozenset({GenerationState.EXITED}),
    GenerationState.EXITED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A move the table does not allow; the message names the current and allowed states."""


def transition(
    current: GenerationState, target: GenerationState, what: str = "generation"
) -> GenerationState:
    """Return `target` when the move from `current` is legal; raise IllegalTransition otherwise.

    `what` names the generation in the message, e.g. "generation 2 of 'web'".
    """
    allowed = TRANSITIONS[current]
    if target not in allowed:
        names = ", ".join(sorted(s.name for s in allowed)) or "nothing (final state)"
        raise IllegalTransition(
            f"{what} cannot go from {current.name} to {target.name}; "
            f"allowed from {current.name}: {names}"
        )
    return target


__all__ = ["TRANSITIONS", "GenerationState", "IllegalTransition", "transition"]
