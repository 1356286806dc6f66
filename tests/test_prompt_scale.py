"""The prompt models' entity side at ReDial's scale stays within a memory bound.

UniCRS and STEP build one named entity encoder per prompt side (R-GCN + MLP + the frozen
name vectors of every entity) and, in prompt pre-training, score a batch against every
entity. At ReDial's 64k entities that is the part of a step that grows with the KG; the
pretrained text encoder's share does not depend on it. The guard runs one pre-training
step of both sides' entity encoders in a fresh process (its own peak RSS) under an
address-space cap, so a change that makes this side O(entities^2) or O(relations x
entities x d) fails here instead of exhausting the machine.
"""

from __future__ import annotations

import textwrap

from tests.conftest import run_guard

# Widths of the defaults: both sides at MiniLM's 384 (entity dim 192): the rec side reads
# the MiniLM encoder, the conversation side the MiniLM-initialised decoder (the default
# compact LM; a GPT-2 from scratch would be 256).
# Every one of the 214 relations kept (min_relation_edges=0, the worst case).
SCALE_GUARD = textwrap.dedent(
    """
    import json, resource
    cap = 8 << 30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch
    import torch.nn.functional as F
    from convrec.graph.rgcn import GraphSettings
    from convrec.prompting.entity_names import EntityNames, NamedEntityEncoder
    from tests.conftest import random_kg
    n, batch = 64_362, 64
    kg = random_kg(entities=n, relations=214, triples=165_696)
    vectors = F.normalize(torch.randn(n, 384), dim=-1)  # what MiniLM's name vectors are like
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss = 0.0
    sides = []
    for width in (384, 384):
        names = EntityNames(vectors, width, 10.0)
        side = NamedEntityEncoder(kg, width // 2, width, GraphSettings(num_bases=8), names)
        user = torch.nn.Parameter(torch.randn(batch, width))
        scores = F.normalize(user, dim=-1) @ side().T  # pre-training: every entity
        targets = torch.randint(n, (batch,))
        loss = loss + F.cross_entropy(scores, targets, label_smoothing=0.1)
        sides.append(side)
    loss.backward()
    assert all(p.grad is not None for s in sides for p in s.parameters() if p.requires_grad)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"scores": list(scores.shape), "delta_gib": (after - before) / 2**20}))
    """
)


def test_redial_scale_entity_side_stays_within_memory_bound():
    result = run_guard(SCALE_GUARD)
    assert result["scores"] == [64, 64_362]
    assert result["delta_gib"] < 3.0, result
