"""Arguments shared by several sub-commands: one spelling, one help text and one meaning each.

  --checkpoint CKPT      a checkpoint file, or a folder holding best.pt (else last.pt)
  --device               auto | cpu | cuda | mps (auto: CUDA > MPS > CPU); the n-gram and the numpy RNN
                         always compute on the CPU
  --temperature, --lengths  the decoding of generated equations (defaults: topicrnn.generation's, the flow's)
  --topic ID|LABEL       θ of one topic: its prototype (the mean θ of the training equations whose dominant
                         topic it is), or the one-hot vector with --theta onehot; needs the topic model the
                         model was trained with (--topics, default: the one its checkpoint names)

Light on purpose (argparse only): `topiceq --help` imports every command module.
"""
from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda", "mps")
THETA_MODES = ("prototype", "onehot")  # topicrnn.conditioning.THETA_MODES
LENGTH_MODES = ("off", "cap", "target")  # topicrnn.generation.LENGTH_CONTROL
DEFAULT_TEMPERATURE, DEFAULT_LENGTHS = 1.0, "cap"  # topicrnn.generation.DEFAULT_TEMPERATURE / _LENGTH_CONTROL


def add_checkpoint(parser, *, many: bool = False) -> None:
    parser.add_argument("--checkpoint", required=True, nargs="+" if many else None, metavar="CKPT",
                        help="checkpoint file, or folder holding best.pt (else last.pt)"
                             + ("; several" if many else ""))


def add_device(parser, *, help_for: str = "the model") -> None:
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help=f"torch device for {help_for} (auto: CUDA > MPS > CPU; n-gram and numpy models run "
                             "on the CPU)")


def add_decoding(parser) -> None:
    """--temperature and --lengths of equation generation (the `equations` flow's decoding by default)."""
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="sampling temperature")
    parser.add_argument("--lengths", choices=LENGTH_MODES, default=DEFAULT_LENGTHS,
                        help="length control under the syntax constraint: target lengths drawn from the topic's "
                             "real training equations as a cap (cap), as the length to reach (target), or none")


def add_topic(parser, *, group=None, topics_option: bool = True) -> None:
    """--topic ID|LABEL and --theta (and, where the command has no --topics of its own, an optional one)."""
    (group or parser).add_argument(
        "--topic", metavar="ID|LABEL", default=None,
        help="θ of one topic (by id or label): its prototype, the mean θ of the training equations whose dominant "
             "topic it is (see --theta)")
    parser.add_argument("--theta", choices=THETA_MODES, default="prototype",
                        help="θ for --topic: the topic's prototype, or the one-hot vector")
    if topics_option:
        parser.add_argument("--topics", metavar="TOPICDIR", default=None,
                            help="topic model folder for --topic (default: the one the checkpoint was trained with)")


def load_model_arg(args):
    """The model of --checkpoint on --device (heavy imports here, when a command runs)."""
    from topicrnn.checkpoint import load_model
    from topicrnn.device import resolve_device

    return load_model(args.checkpoint, device=resolve_device(args.device))


def theta_arg(args, lm):
    """θ [K] for a model from --words (where the command has it: θ inferred by the LDA of --topics),
    --topic/--theta/--topics: None for an unconditioned model, the uniform mixture without either."""
    import numpy as np

    from pipeline.topics import ThetaTable, TopicModel
    from topicrnn.conditioning import check_topic_dims, default_data_dir, theta_for_request

    words = getattr(args, "words", None)
    flag = "--words" if words else "--topic"
    if not lm.conditioned:
        if words or args.topic is not None:
            raise ValueError(f"{flag}: {lm.path} takes no topic vector (it was trained without topics)")
        return None
    if not words and args.topic is None:
        return np.full(lm.topic_dim, 1.0 / lm.topic_dim, dtype=np.float32)
    topic_dir = args.topics or (lm.metadata.get("topic") or {}).get("dir")
    if not words and not topic_dir and args.theta == "onehot" and str(args.topic).isdigit():
        index = int(args.topic)  # a one-hot θ by id needs only K, not the topic model
        if not 0 <= index < lm.topic_dim:
            raise ValueError(f"--topic {index}: the model has topics 0..{lm.topic_dim - 1}")
        return np.eye(lm.topic_dim, dtype=np.float32)[index]
    if not topic_dir:
        raise ValueError(f"{flag} needs the topic model the checkpoint was trained with: pass --topics TOPICDIR")
    if words:  # inferring θ from words needs the LDA itself (gensim)
        topic_model = TopicModel.load(topic_dir)
        check_topic_dims(lm, topic_model)
        return theta_for_request(topic_model, words=" ".join(words))
    table = ThetaTable(topic_dir)  # θ of a topic needs no gensim: prototypes come from theta.npz
    check_topic_dims(lm, table)
    return theta_for_request(table, topic=args.topic, mode=args.theta, data_dir=default_data_dir(lm, table))
