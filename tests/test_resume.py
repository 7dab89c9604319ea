"""utils/resume.py: which batches a resumed run skips, and the loader wrapper that skips them (fast, no BasicSR run;
the end-to-end check is tests/test_reliability_cli.py::test_resume_from_a_mid_epoch_checkpoint_is_bit_identical)."""
import random

import numpy as np

from odm_basicsr.utils.resume import ResumedEpochLoader, batches_to_skip, generator_states


def test_batches_to_skip():
    state = {'generators': {}, 'epoch': 2, 'iter': 7, 'epoch_length': 3}
    assert batches_to_skip(state, 3) == 1          # epoch 2 began after iteration 6
    assert batches_to_skip(dict(state, iter=8), 3) == 2
    assert batches_to_skip(dict(state, iter=6), 3) == 0   # an epoch boundary: nothing trained in epoch 2
    assert batches_to_skip(state, 2) == 0          # saved with 3-batch epochs, resumed with 2 (other batch size)
    assert batches_to_skip({k: v for k, v in state.items() if k != 'epoch_length'}, 3) == 0  # an older state
    assert batches_to_skip({'epoch': 2, 'iter': 7, 'epoch_length': 3}, 3) == 0  # no generators: BasicSR's replay


class RandomBatches:
    """A loader whose batches draw from python's and numpy's generators, as BasicSR's crops and flips do."""

    def __len__(self):
        return 4

    def __iter__(self):
        for i in range(4):
            yield i, random.random(), np.random.rand()


def test_resumed_epoch_loader_continues_the_epoch_with_the_checkpoint_generators():
    random.seed(0)
    np.random.seed(0)
    loader = RandomBatches()
    epoch = iter(loader)
    first = [next(epoch), next(epoch)]  # the interrupted run trained on two batches, then saved its state
    states = generator_states()
    want = list(epoch)  # what it would have trained on next

    random.seed(123)  # the resumed process starts with other generators
    np.random.seed(123)
    logged = []
    resumed = ResumedEpochLoader(loader, 2, states, logged.append)
    assert len(resumed) == 4
    next(iter(resumed))  # the prefetcher's constructor iterator (CUDAPrefetcher draws one batch from it): no skip
    assert logged == []
    assert list(resumed) == want and logged == [2]
    assert [b[0] for b in resumed] == [0, 1, 2, 3] and logged == [2]  # the next epoch is whole
    assert [b[0] for b in first + want] == [0, 1, 2, 3]
