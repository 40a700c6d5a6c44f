"""TorchServe handler for the infrastructure test (paper Fig. 2): no model, no inference, a static answer.

TorchServe calls `handle(data, context)` with one entry per request of its batch and expects one result per
entry; a dict is sent back as JSON. The answer has the shape of the inference server's (`{"items": [...]}`)
so the same load generator can check it.
"""

ANSWER = {"items": list(range(21))}


def handle(data, context):  # noqa: ANN001, ANN201 - TorchServe's handler signature
    if data is None:  # TorchServe's initialisation call
        return None
    return [ANSWER for _ in data]
