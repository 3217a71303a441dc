"""Evaluates a finished classifier on held-out labelled images, without training: a report a person can read.

    KERAS_BACKEND=torch python apps/evaluate.py --model=runs/fmnist/linear_probe --workdir=runs/fmnist/evaluation

--model: a linear-probe or fine-tuning workdir, a .keras classifier (ViTClassifier, LinearProbe, MLPProbe), or
official / timm fine-tuned weights (.pth, .safetensors, .npz, a HF directory). The evaluation images are chosen as
in the other apps (--dataset, --eval_dataset, --val_fraction; a workdir's saved split is reused), and never include
an image the model trained on. --workdir receives report.json, report.md, predictions.csv, confusion_matrix.png,
roc.png, pr.png, calibration.png and tensorboard/.
"""

import os

from absl import app, flags

if __name__ == "__main__":  # before Keras loads: glibc reads the setting only at process start (huge_pages.py)
    import huge_pages

    huge_pages.restart_with_huge_pages()

import common  # noqa: E402
import downstream  # noqa: E402
import reporting  # noqa: E402

flags.DEFINE_string("model", None, "Classifier: a linear-probe or fine-tuning workdir, a .keras ViTClassifier / "
                    "LinearProbe / MLPProbe, or official / timm fine-tuned weights.", required=True)
flags.DEFINE_string("workdir", None, "Where the report goes.", required=True)
common.define_data_flags(help_text="The data the model was trained on (as pretrain.py's --dataset); defaults to the "
                         "model workdir's. Its evaluation split is evaluated.")
flags.DEFINE_integer("seed", 0, "Seed of a held-out split made here (a saved one is reused).")
flags.DEFINE_integer("batch_size", 256, "Images per forward pass.")
flags.DEFINE_integer("image_size", None, "Official weights: the size to build the model at (default: the checkpoint's).")
flags.DEFINE_integer("num_heads", None, "Official weights of a width other than 192/384/768/1024/1280: attention heads.")
flags.DEFINE_list("mean", None, "Normalisation mean per channel; default: the model workdir's, else the data's.")
flags.DEFINE_list("std", None, "Normalisation std per channel; default: the model workdir's, else the data's.")
common.define_report_flags()
flags.DEFINE_integer("verbose", 0, "Keras progress output while predicting.")
common.define_distribution_flag("Several processes: ddp (torch, under torchrun) splits the images over them; "
                                "the report is process 0's, on all of them.")
FLAGS = flags.FLAGS


def load_classifier(spec):
    """`(model, record, workdir or None, file)`: the classifier, its classifier.json (or {}), its workdir and file."""
    import keras

    from keras_mae import checkpoints
    from keras_mae.models import ViTClassifier
    from keras_mae.models.linear_probe import LinearProbe

    spec = os.path.expanduser(spec)
    if not os.path.exists(spec):
        raise common.UserError(f"--model {spec!r} does not exist; pass a probe or fine-tuning workdir or a model file.")
    workdir = spec if os.path.isdir(spec) else os.path.dirname(spec)
    record = reporting.read_classifier_record(workdir)
    if os.path.isdir(spec):
        names = [record["model"]] if record else ["classifier.keras", "probe.keras"]
        found = [os.path.join(spec, name) for name in names if os.path.isfile(os.path.join(spec, name))]
        if found:
            spec = found[0]
        elif not os.path.isfile(os.path.join(spec, "config.json")):  # not a Hugging Face directory either
            raise common.UserError(f"{spec!r} holds no classifier.keras or probe.keras; probe or fine-tune first.")
    if spec.endswith(".keras"):
        model = keras.saving.load_model(spec, compile=False)
    else:
        overrides = {"num_heads": FLAGS.num_heads} if FLAGS.num_heads else {}
        model = checkpoints.load_model(spec, image_size=FLAGS.image_size, **overrides)
        record, workdir = {}, None
    if not isinstance(model, (ViTClassifier, LinearProbe)) or not model.num_classes:
        raise common.UserError(f"{spec!r} is a {type(model).__name__} without a classification head; evaluate a "
                               "fine-tuned or probed model (apps/finetune.py, apps/linear_probe.py).")
    return model, record, workdir, spec


def main(argv):
    downstream.setup_distribution(FLAGS)  # under torch DDP each process predicts its share of the images
    model, record, model_workdir, model_file = load_classifier(FLAGS.model)
    encoder = model.encoder
    common.check_workdir(FLAGS.workdir)
    dataset = FLAGS.dataset or record.get("dataset")
    eval_dataset = FLAGS.eval_dataset or (record.get("eval_dataset") if not FLAGS.dataset else None)
    if dataset:
        split = common.split_data(FLAGS, dataset, encoder.num_channels, FLAGS.workdir, saved=[model_workdir],
                                  eval_dataset=eval_dataset)
    elif eval_dataset:
        from keras_mae.data.splits import eval_only

        split = eval_only(eval_dataset, FLAGS.eval_split, FLAGS.data_dir, encoder.num_channels)
        print(f"Data:             {split.describe()}")
    else:
        raise common.UserError("Pass --dataset (the data the model trained on; its evaluation split is evaluated) or "
                               "--eval_dataset (labelled images the model never trained on).")
    try:
        split.require_labelled_eval("Evaluation")
    except ValueError as error:
        raise common.UserError(str(error))
    if split.eval.num_classes > model.num_classes:
        raise common.UserError(f"The evaluation data has {split.eval.num_classes} classes and the model "
                               f"{model.num_classes}; evaluate on data with the model's classes.")
    mean = FLAGS.mean or record.get("mean") or split.eval.mean
    std = FLAGS.std or record.get("std") or split.eval.std
    mean, std = [float(m) for m in mean], [float(s) for s in std]

    from keras_mae.evaluation import predict_probabilities

    print(f"Model:            {model_file} ({type(model).__name__}, {model.num_classes} classes)")
    labels, probabilities, files = predict_probabilities(model, split.eval, encoder.image_size, FLAGS.batch_size,
                                                         mean, std, verbose=FLAGS.verbose)
    names = record.get("class_names") if len(record.get("class_names") or ()) == model.num_classes else None
    names = names or reporting.class_names(split, model.num_classes)
    reporting.write(FLAGS, FLAGS.workdir, labels, probabilities, files, split, names,
                    tensorboard_dir=os.path.join(FLAGS.workdir, "tensorboard"), model=model_file,
                    dataset=dataset or eval_dataset)


if __name__ == "__main__":
    app.run(common.run_main(main))
