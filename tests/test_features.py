"""Capturing named intermediate tensors, and finding the classifier head."""

from __future__ import annotations

import pytest
import torch
from avalanche.models import IncrementalClassifier, MultiHeadClassifier, make_icarl_net
from torch import nn

from avalanche_m2kd.features import FeatureCapture, find_head, resolve_layer_specs


class _Named(nn.Module):
    """A model with readable module names and one module off the forward path."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
        self.unused = nn.Linear(5, 5)
        self.classifier = nn.Linear(5, 3)

    def forward(self, x):
        return self.classifier(self.backbone(x))


# --------------------------------------------------------------------- FeatureCapture


def test_capture_outputs_and_inputs_with_the_right_shapes(conv_net):
    net = conv_net(10)
    x = torch.randn(4, 1, 8, 8)
    with FeatureCapture(net, ["1", "4", "8:input"]) as cap:
        out = net(x)
    assert tuple(cap.features["1"].shape) == (4, 8, 8, 8)
    assert tuple(cap.features["4"].shape) == (4, 16, 8, 8)
    assert tuple(cap.features["8:input"].shape) == (4, 16)
    # The input of the head is the penultimate representation: the head applied to
    # it gives the model's output.
    assert torch.allclose(net[8](cap.features["8:input"]), out)
    assert torch.allclose(cap.features["4"], net[:5](x))
    # Not detached: the student's features keep their graph.
    assert cap.features["4"].requires_grad


def test_collect_returns_tensors_in_spec_order():
    net = _Named()
    with FeatureCapture(net, ["classifier", "backbone", "classifier:input"]) as cap:
        net(torch.randn(2, 6))
        collected = cap.collect()
    assert [tuple(t.shape) for t in collected] == [(2, 3), (2, 5), (2, 5)]
    assert collected[1] is cap.features["backbone"]


def test_detach_removes_the_hooks():
    net = _Named()
    cap = FeatureCapture(net, ["backbone"]).attach()
    assert cap.attached
    net(torch.zeros(2, 6))
    first = cap.features["backbone"]
    cap.detach()
    assert not cap.attached
    assert len(net.backbone._forward_hooks) == 0
    net(torch.ones(3, 6))
    # The last captured tensor stays readable, and nothing new was captured.
    assert cap.features["backbone"] is first
    assert tuple(cap.features["backbone"].shape) == (2, 5)


def test_context_manager_detaches_on_exit_and_attach_is_idempotent():
    net = _Named()
    cap = FeatureCapture(net, ["backbone"])
    with cap:
        cap.attach()  # a second attach must not register a second hook
        assert len(net.backbone._forward_hooks) == 1
    assert not cap.attached
    assert len(net.backbone._forward_hooks) == 0


def test_reattach_forgets_earlier_captures():
    net = _Named()
    with FeatureCapture(net, ["backbone"]) as cap:
        net(torch.zeros(2, 6))
    cap.attach()
    assert cap.features == {}
    cap.detach()


def test_unknown_layer_raises_listing_valid_names():
    net = _Named()
    with pytest.raises(ValueError, match="layer9") as err:
        FeatureCapture(net, ["backbone", "layer9"])
    message = str(err.value)
    assert "backbone.0" in message and "classifier" in message
    with pytest.raises(ValueError, match="Unknown layer 'nope'"):
        FeatureCapture(net, ["nope:input"])
    with pytest.raises(ValueError, match="Unknown layer"):
        FeatureCapture(net, [""])  # the root module is not a layer
    with pytest.raises(ValueError, match="at least one layer"):
        resolve_layer_specs(net, [])


def test_collect_raises_for_a_layer_off_the_forward_path():
    net = _Named()
    with FeatureCapture(net, ["backbone", "unused"]) as cap:
        with pytest.raises(RuntimeError, match="unused"):
            cap.collect()  # before any forward pass
        net(torch.randn(2, 6))
        with pytest.raises(RuntimeError, match=r"\['unused'\]"):
            cap.collect()


def test_capture_of_a_non_tensor_output_raises_type_error():
    net = nn.Sequential(nn.LSTM(3, 4, batch_first=True))
    with FeatureCapture(net, ["0"]), pytest.raises(TypeError, match="not a tensor"):
        net(torch.randn(2, 5, 3))


# ------------------------------------------------------------------------- find_head


def test_find_head_of_an_mlp_is_its_last_linear(mlp):
    net = mlp(10)
    assert find_head(net) == "4"


def test_find_head_prefers_the_incremental_classifier_over_its_inner_linear():
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), IncrementalClassifier(6, 2))
    # "2.classifier" is the last nn.Linear; the head is the IncrementalClassifier.
    assert [n for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1] == "2.classifier"
    assert find_head(net) == "2"


def test_find_head_finds_an_incremental_classifier_in_the_conv_net(conv_net):
    net = conv_net(head=IncrementalClassifier(16, 2))
    assert find_head(net) == "8"


def test_find_head_rejects_a_multi_head_classifier():
    net = nn.Sequential(nn.Linear(8, 4), MultiHeadClassifier(4))
    with pytest.raises(ValueError, match="class-incremental"):
        find_head(net)


def test_find_head_rejects_several_incremental_classifiers():
    net = nn.Sequential(IncrementalClassifier(4, 4), IncrementalClassifier(4, 2))
    with pytest.raises(ValueError, match="several"):
        find_head(net)
    assert find_head(net, head_name="1") == "1"


def test_find_head_without_linear_asks_for_head_name():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 10, 1), nn.Flatten())
    with pytest.raises(ValueError, match="head_name"):
        find_head(net)


def test_explicit_head_name_is_checked_and_returned():
    net = _Named()
    assert find_head(net, "classifier") == "classifier"
    assert find_head(net, "unused") == "unused"  # an explicit choice wins
    with pytest.raises(ValueError, match="Unknown head_name 'fc'") as err:
        find_head(net, "fc")
    message = str(err.value)
    for linear in ("backbone.0", "unused", "classifier"):
        assert linear in message


def test_find_head_of_icarl_resnet32():
    net = make_icarl_net(10)
    net.eval()
    head = find_head(net)
    assert head == "classifier"
    linears = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    assert linears[-1] == head
    assert net.classifier.out_features == 10
    # It is the module that produces the logits.
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), FeatureCapture(net, [head]) as cap:
        out = net(x)
    assert torch.equal(cap.features[head], out)
