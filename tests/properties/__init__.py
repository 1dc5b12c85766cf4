"""Registry-wide collapse invariants (docs/design.md, "Collapse invariants"), written once over every registered component.

Property names a component may list in ``exempt_properties = {name: reason}`` (the reason, a non-empty
string, is shown in the skip message):

energies:   aligned_is_diagonal, finite, infonce_bound (<= log N), state_roundtrip
            (scale/rotation invariance and minimality on identical views are opt-in through the class
            attributes ``scale_invariant = True`` and ``minimal_on_identical = True``)
strategies: collapsed_worse_than_spread, subspace_worse_than_spread, finite, permutation_invariant (contrastive only),
            terms_sum_to_loss, target_no_grad (asymmetry only), state_roundtrip
"""
