import torch

from utils.ctc import greedy_decode, infeasible_targets
from utils.metrics import cer, edit_ops, wer


def test_wer_counts_each_kind_of_error():
    # ref: A B C D ; hyp: A X C D E  -> one substitution (B->X), one insertion (E)
    result = wer(["A B C D"], ["A X C D E"])
    assert result["sub"] == 25.0 and result["ins"] == 25.0 and result["del"] == 0.0
    assert result["wer"] == 50.0
    assert wer(["A B C"], ["A C"])["del"] == 100 / 3


def test_wer_is_corpus_level_not_mean_of_sentences():
    # 1 error in 1 word and 0 errors in 9 words: corpus WER 10 %, not the 50 % a sentence mean gives.
    assert wer(["A", "A B C D E F G H I"], ["B", "A B C D E F G H I"])["wer"] == 10.0


def test_edit_distance_does_not_overflow_on_long_sequences():
    ref = ["w"] * 700
    assert edit_ops(ref, []) == (0, 700, 0)
    assert edit_ops([], ref) == (0, 0, 700)
    assert sum(edit_ops(ref, ["x"] * 600)) == 700


def test_cer_counts_characters_with_spaces():
    assert cer(["AB CD"], ["AB CD"]) == 0.0
    assert cer(["AB CD"], ["ABCD"]) == 20.0


def test_greedy_decode_merges_repeats_only_without_blank_between():
    def one_hot(path, vocab=4):
        return torch.nn.functional.one_hot(torch.tensor(path), vocab).float().log()[None]

    assert greedy_decode(one_hot([1, 1, 0, 1, 2, 2, 0, 0]), torch.tensor([8])) == [[1, 1, 2]]
    assert greedy_decode(one_hot([0, 3, 3, 3, 0]), torch.tensor([5])) == [[3]]
    # frames past a sample's length do not count
    assert greedy_decode(one_hot([2, 0, 3, 3]), torch.tensor([2])) == [[2]]


def test_infeasible_targets_counts_samples_too_short_for_their_ctc_target():
    targets, target_lengths = torch.tensor([1, 1, 2, 3, 3, 4]), torch.tensor([3, 2, 1])  # "a a b", "c c", "d"
    needed = [4, 3, 1]  # a blank must separate equal neighbours; none across two samples' targets
    assert infeasible_targets(torch.tensor(needed), targets, target_lengths) == 0
    assert infeasible_targets(torch.tensor([3, 2, 1]), targets, target_lengths) == 2
    assert infeasible_targets(torch.tensor([4, 3, 0]), targets, target_lengths) == 1
    assert infeasible_targets(torch.tensor([1, 1]), torch.tensor([5, 5]), torch.tensor([1, 1])) == 0
    assert infeasible_targets(torch.tensor([0, 2]), torch.tensor([5, 5]), torch.tensor([0, 2])) == 1  # empty first
    log_probs = torch.randn(3, 4, 6).log_softmax(-1)
    loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), targets, torch.tensor([3, 2, 1]), target_lengths,
                                        reduction="none")
    assert torch.isinf(loss).sum() == 2  # torch agrees on which ones are impossible
