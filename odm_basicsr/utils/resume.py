"""Exact resumes: the generator states a training state carries, and the batches a mid-epoch resume must skip.

BasicSR 1.4.2 resumes at the start of the checkpoint's epoch: a checkpoint taken after k batches of an epoch trains
those k batches again, with other crops and flips, so the resumed run is not the interrupted one. ODMModel's
training state records the python / numpy / torch generator states and its epoch (the next one when the checkpoint
closes an epoch). ``ResumedEpochLoader`` wraps the train loader of a resumed run: on the resumed epoch it draws and
drops the k batches the interrupted run had trained on (the sampler orders each epoch by its number, and BasicSR
re-seeds data-loader workers at each epoch start, so the same k batches come out), then restores the python and
numpy generators as they were at the checkpoint, and yields batch k + 1 onwards. ``_compat`` installs it.
With data-loader workers it needs ``manual_seed`` (BasicSR seeds the workers from it) and the same worker count.
Not exact with ``persistent_workers: true`` (the workers' generators carry over epochs and are not saved), nor
with ``prefetch_mode: cuda`` or ``cpu`` and no workers (they draw batches ahead of the step that saves the state).
"""
import random

import numpy as np
import torch


def generator_states():
    """The python, numpy, torch (and initialized CUDA) generator states, as tensors and lists torch.save keeps."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    states = {
        'python': [py_state[0], list(py_state[1]), py_state[2]],
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def restore_generator_states(states):
    """Set the generators that ``states`` (from ``generator_states``) holds: python and numpy always, torch and CUDA
    where present."""
    random.setstate((states['python'][0], tuple(states['python'][1]), states['python'][2]))
    name, keys, pos, has_gauss, cached = states['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if 'torch' in states:
        torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def batches_to_skip(resume_state, epoch_length):
    """Batches of the resumed epoch that the interrupted run had trained on. 0 (BasicSR's replay is kept) at an
    epoch boundary, for a state that is not ODMModel's (no generator states), and for one whose epochs had another
    length than ``epoch_length`` (other batch size, data or GPU count; states written before the length was saved)."""
    if 'generators' not in resume_state or resume_state.get('epoch_length') != epoch_length:
        return 0
    done = resume_state['iter'] - resume_state['epoch'] * epoch_length
    return done if 0 < done < epoch_length else 0


class ResumedEpochLoader:
    """The train loader of a resumed run (BasicSR's DataLoader, wrapped): the epoch it resumes starts after ``skip``
    batches, with the python / numpy generators of the checkpoint (``states``); later epochs, ``len`` and every
    attribute are the loader's own.

    BasicSR's prefetchers make one iterator in their constructor (CUDAPrefetcher even draws a batch from it) and one
    per epoch at ``reset()``: the resumed epoch is the second iterator.

    Args:
        loader (DataLoader): BasicSR's train loader.
        skip (int): batches of the resumed epoch to draw and drop.
        states (dict): the checkpoint's generator states (``generator_states``).
        log (callable | None): called once with ``skip`` when the skipping happens.
    """

    RESUMED_ITERATOR = 2  # the prefetcher's constructor makes the first, the resumed epoch's reset() the second

    def __init__(self, loader, skip, states, log=None):
        self.loader, self.skip, self.log = loader, skip, log
        self.states = {k: states[k] for k in ('python', 'numpy')}  # torch: ODMModel restores it at feed_data
        self.iterators_made = 0

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):  # only for names the wrapper lacks: the loader's .dataset, .sampler, ...
        if name == 'loader':  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self):
        self.iterators_made += 1
        if self.skip and self.iterators_made == self.RESUMED_ITERATOR:
            return self._resumed_epoch()
        return iter(self.loader)

    def _resumed_epoch(self):
        iterator = iter(self.loader)
        skip, self.skip = self.skip, 0
        for _ in range(skip):
            next(iterator)
        restore_generator_states(self.states)
        if self.log:
            self.log(skip)
        yield from iterator
