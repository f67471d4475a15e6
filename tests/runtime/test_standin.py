"""The ONNX stand-in detector (scalemae_det/synthetic/standin.py) does what its numpy rule says."""

import numpy as np
import onnx

from scalemae_det.base.metadata import INPUT_NAME, ModelMetadata
from scalemae_det.synthetic.standin import SIZE, build_model, metadata, reference


def test_standin_matches_its_numpy_rule(tmp_path):
    import onnxruntime as ort

    meta = metadata()
    model = build_model(tmp_path / "m.onnx", meta)
    rng = np.random.default_rng(0)
    images = np.full((3, 3, meta.tile, meta.tile), 0.1, np.float32)
    for img in images:
        for _ in range(5):
            c, r = rng.integers(-6, meta.tile, 2)
            img[:, max(r, 0) : r + SIZE, max(c, 0) : c + SIZE] = rng.uniform(0.55, 1.0, (3, 1, 1))
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    boxes, scores, labels, num = sess.run(None, {INPUT_NAME: images})
    for i, (rb, rs, rl) in enumerate(reference(images, meta.max_detections)):
        n = int(num[i])
        assert n == len(rb) > 0
        np.testing.assert_array_equal(boxes[i, :n], rb)
        np.testing.assert_allclose(scores[i, :n], rs, rtol=1e-6)
        np.testing.assert_array_equal(labels[i, :n], rl)
        assert not boxes[i, n:].any() and not scores[i, n:].any() and not labels[i, n:].any()
    assert (
        ModelMetadata.from_props({p.key: p.value for p in onnx.load(model).metadata_props}) == meta
    )
