"""knobs.Top with link(): Top -> Middle -> Leaf live, Top -> Other pruned."""

from knobs import Leaf, Middle, Other, Top  # noqa: F401

Top.link(Middle).link(Leaf)
