import pytest

from dataset.loader import TrainBatchSampler, eval_batches
from utils.errors import UserError


def epoch_batches(world_size, batch_size, epoch=0, start=0, bucket=False, n=23):
    lengths = [(i * 7) % 11 + 1 for i in range(n)]
    ranks = []
    for rank in range(world_size):
        sampler = TrainBatchSampler(lengths, batch_size, rank, world_size, seed=5, bucket=bucket)
        sampler.set_epoch(epoch, start)
        ranks.append(list(sampler))
    # the global batch of step k is the concatenation of every rank's k-th batch
    return [sum((r[k] for r in ranks), []) for k in range(len(ranks[0]))]


@pytest.mark.parametrize("bucket", [False, True])
def test_global_batches_do_not_depend_on_the_number_of_processes(bucket):
    assert epoch_batches(1, 4, bucket=bucket) == epoch_batches(2, 2, bucket=bucket) == epoch_batches(4, 1, bucket=bucket)


def test_epochs_differ_and_resume_skips_finished_batches():
    first, second = epoch_batches(2, 2, epoch=0), epoch_batches(2, 2, epoch=1)
    assert first != second
    assert epoch_batches(2, 2, epoch=1, start=3) == second[3:]
    assert len(first) == 23 // 4  # an incomplete global batch is dropped: every step is full


def test_bucketing_groups_similar_lengths():
    lengths = list(range(1000))
    sampler = TrainBatchSampler(lengths, 10, 0, 1, seed=0, bucket=True)
    spread = [max(b) - min(b) for b in sampler]
    assert max(spread) < 100  # random batches of 10 from 0..999 spread far wider


def test_a_split_smaller_than_one_step_is_refused():
    with pytest.raises(UserError, match="3 samples"):
        TrainBatchSampler([1, 1, 1], 2, 0, 2, seed=0)


@pytest.mark.parametrize("n,world", [(5, 2), (7, 3), (2, 4), (10, 1)])
def test_evaluation_scores_every_sample_exactly_once(n, world):
    seen = [i for rank in range(world) for batch in eval_batches(n, 2, rank, world) for i in batch]
    assert sorted(seen) == list(range(n))


def test_bucketing_without_frame_counts_is_refused():
    with pytest.raises(UserError, match="training.length_bucketing needs every training sample's frame count"):
        TrainBatchSampler([10, None, 12, 9], 2, 0, 1, seed=0, bucket=True)
    TrainBatchSampler([10, None, 12, 9], 2, 0, 1, seed=0, bucket=False)  # without bucketing counts are unused
