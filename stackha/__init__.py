"""stackha: make an OpenStack control plane highly available, and prove it.

Layout (see DESIGN.md in the shared docs): ``model`` (bundle, analysis) → ``plan`` →
``engine`` → ``hosts`` (lab | ssh) with ``services`` operators; ``verify`` injects faults and
measures; ``instanceha`` recovers instances on the Masakari model; ``cli`` is a thin layer.
"""

__version__ = "0.1.0"
