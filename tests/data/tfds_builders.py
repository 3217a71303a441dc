"""Prepared local TFDS datasets for tests: no download, no checksums file."""


def prepare_tfds(tfds, class_name, data_dir, splits, num_classes, encoding_format=None):
    """Prepares a TFDS dataset named as `class_name` in snake case in `data_dir` and returns `data_dir`.

    Args:
        tfds: the `tensorflow_datasets` module (tests import it with `pytest.importorskip`).
        class_name: str. The builder's class name, e.g. "KerasMaeTinyTest" -> `keras_mae_tiny_test`; once per
            process (TFDS registers it).
        data_dir: str. Where the dataset is prepared.
        splits: dict split name -> callable giving `(image, label)` pairs; an image is a uint8 array (encoded
            as `encoding_format`) or encoded bytes (stored as given).
        num_classes: int.
        encoding_format: None (PNG) or "jpeg", as `tfds.features.Image`.
    """

    def _info(self):
        features = {"image": tfds.features.Image(shape=(None, None, 3), encoding_format=encoding_format),
                    "label": tfds.features.ClassLabel(num_classes=num_classes)}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(examples) for name, examples in splits.items()}

    def _generate_examples(self, examples):
        for i, (image, label) in enumerate(examples()):
            yield i, {"image": image, "label": label}

    builder = type(class_name, (tfds.core.GeneratorBasedBuilder,), dict(
        VERSION=tfds.core.Version("1.0.0"),
        # No checksums file next to the code; looking for one needs `importlib_resources`, which this
        # environment's etils lacks.
        code_path=None,
        _info=_info, _split_generators=_split_generators, _generate_examples=_generate_examples,
        __module__=__name__,
    ))
    builder(data_dir=data_dir).download_and_prepare()
    return data_dir
