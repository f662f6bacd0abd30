"""The on-disk module cache: hits never compile, corrupt entries are rebuilt, writes are atomic.

"Never compiles" is proven without timing: ``wasmtime.Module.__init__`` (the only way to
compile) is made to raise while a second runtime loads the module from the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wasmtime

from wasmhost import Limits, Plugin, PluginSpec, Runtime
from wasmhost._cache import ModuleCache, engine_fingerprint
from wasmhost._filter_status import HEADERS_CONTINUE

DATA = Path(__file__).parent / "data"
MakeRuntime = Callable[..., Runtime]


def lim_guest(tag: bytes = b"") -> bytes:
    """The limits test plugin; a non-empty ``tag`` adds a custom section, giving another sha256."""
    module = bytes(wasmtime.wat2wasm((DATA / "lim_guest.wat").read_text(encoding="utf-8")))
    if not tag:
        return module
    name = b"lim-tag"
    payload = bytes([len(name)]) + name + tag
    assert len(payload) < 128  # one-byte LEB128 size
    return module + b"\x00" + bytes([len(payload)]) + payload


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[MakeRuntime]:
    runtimes: list[Runtime] = []

    def make(cache_dir: Path | None = None) -> Runtime:
        runtime = Runtime(limits=Limits(), cache_dir=str(cache_dir or tmp_path / "cache"))
        runtimes.append(runtime)
        return runtime

    try:
        yield make
    finally:
        for runtime in runtimes:
            runtime.close()


def cache_of(runtime: Runtime) -> ModuleCache:
    assert isinstance(runtime.cache, ModuleCache)
    return runtime.cache


def forbid_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: wasmtime.Module, engine: wasmtime.Engine, wasm: bytes) -> None:
        raise AssertionError("wasmtime.Module() was called: the module was compiled")

    monkeypatch.setattr(wasmtime.Module, "__init__", refuse)


def serves_requests(runtime: Runtime, module: bytes) -> bool:
    plugin = Plugin(runtime, runtime.compile(module), PluginSpec(name="cached"))
    plugin.start()
    headers: list[tuple[bytes, bytes]] = []
    status = plugin.new_http_stream().on_request_headers(headers, True)
    return status == HEADERS_CONTINUE and headers == [(b"x-lim", b"ok")]


def entry_files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir())


# -- hits and misses -----------------------------------------------------------------------------

def test_first_compile_stores_an_entry(make_runtime: MakeRuntime, tmp_path: Path) -> None:
    runtime = make_runtime()
    module = lim_guest()
    runtime.compile(module)
    stats = cache_of(runtime).stats
    assert (stats.misses, stats.compiles, stats.hits) == (1, 1, 0)
    artifact, header = cache_of(runtime).paths(hashlib.sha256(module).hexdigest())
    assert artifact.is_file() and header.is_file()
    meta = json.loads(header.read_text())
    assert meta["module_sha256"] == hashlib.sha256(module).hexdigest()
    assert meta["artifact_size"] == artifact.stat().st_size
    assert meta["artifact_sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert entry_files(tmp_path / "cache") == sorted([artifact.name, header.name])


def test_hit_in_a_new_runtime_does_not_compile(make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    module = lim_guest()
    make_runtime().compile(module)

    second = make_runtime()  # a new engine, as after a restart
    forbid_compiling(monkeypatch)
    assert serves_requests(second, module)
    stats = cache_of(second).stats
    assert (stats.hits, stats.misses, stats.compiles, stats.rebuilds) == (1, 0, 0, 0)


def test_hit_in_the_same_runtime_does_not_compile(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime()
    module = lim_guest()
    runtime.compile(module)
    runtime.compile(module)
    runtime.compile(module)
    stats = cache_of(runtime).stats
    assert (stats.compiles, stats.hits) == (1, 2)


def test_invalid_module_is_reported_and_not_cached(make_runtime: MakeRuntime, tmp_path: Path) -> None:
    from wasmhost import ModuleError

    runtime = make_runtime()
    with pytest.raises(ModuleError, match="invalid module"):
        runtime.compile(b"\0asm\x01\0\0\0\x01\xff")
    assert not (tmp_path / "cache").exists() or entry_files(tmp_path / "cache") == []


def test_digest_must_be_a_sha256(make_runtime: MakeRuntime) -> None:
    cache = cache_of(make_runtime())
    with pytest.raises(ValueError, match="not a lower-case sha256"):
        cache.load_or_compile(lim_guest(), "../../etc/passwd")


# -- key: module digest + wasmtime version + engine settings -------------------------------------

def test_engine_fingerprint_follows_engine_settings() -> None:
    def engine(*, epoch: bool, reservation: int = 1 << 32) -> wasmtime.Engine:
        config = wasmtime.Config()
        config.epoch_interruption = epoch
        config.memory_may_move = False
        config.memory_reservation = reservation
        return wasmtime.Engine(config)

    same_a = engine_fingerprint(engine(epoch=True))
    same_b = engine_fingerprint(engine(epoch=True))
    assert same_a == same_b
    assert engine_fingerprint(engine(epoch=False)) != same_a
    assert engine_fingerprint(engine(epoch=True, reservation=1 << 30)) != same_a


def test_runtime_with_other_engine_settings_does_not_reuse_entries(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    module = lim_guest()
    digest = hashlib.sha256(module).hexdigest()
    runtime = Runtime(cache_dir=str(cache_dir))
    try:
        runtime.compile(module)
    finally:
        runtime.close()

    config = wasmtime.Config()  # defaults: no epoch interruption, movable memory
    other = ModuleCache(cache_dir, wasmtime.Engine(config))
    other.load_or_compile(module, digest)
    assert (other.stats.hits, other.stats.misses, other.stats.compiles) == (0, 1, 1)
    assert len([n for n in entry_files(cache_dir) if n.endswith(".cwasm")]) == 2


# -- corruption ----------------------------------------------------------------------------------

def corrupt_then_reload(
    make_runtime: MakeRuntime, damage: Callable[[Path, Path], None], monkeypatch: pytest.MonkeyPatch
) -> ModuleCache:
    module = lim_guest()
    first = make_runtime()
    first.compile(module)
    artifact, header = cache_of(first).paths(hashlib.sha256(module).hexdigest())
    damage(artifact, header)

    second = make_runtime()
    assert serves_requests(second, module)
    cache = cache_of(second)
    assert (cache.stats.hits, cache.stats.rebuilds, cache.stats.compiles) == (0, 1, 1)
    assert cache.last_error

    third = make_runtime()  # the rebuilt entry is good again
    forbid_compiling(monkeypatch)
    assert serves_requests(third, module)
    assert cache_of(third).stats.hits == 1
    return cache


def test_truncated_artifact_is_rebuilt(make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    def truncate(artifact: Path, header: Path) -> None:
        data = artifact.read_bytes()
        artifact.write_bytes(data[: len(data) // 2])

    cache = corrupt_then_reload(make_runtime, truncate, monkeypatch)
    assert "bytes, header says" in (cache.last_error or "")


def test_garbage_artifact_of_the_right_size_is_rebuilt(make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    def scribble(artifact: Path, header: Path) -> None:
        artifact.write_bytes(os.urandom(artifact.stat().st_size))

    cache = corrupt_then_reload(make_runtime, scribble, monkeypatch)
    assert "checksum" in (cache.last_error or "")


def test_garbage_header_is_rebuilt(make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    def scribble(artifact: Path, header: Path) -> None:
        header.write_bytes(b"\x00not json")

    cache = corrupt_then_reload(make_runtime, scribble, monkeypatch)
    assert "header unreadable" in (cache.last_error or "")


def test_missing_header_is_rebuilt(make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    def drop(artifact: Path, header: Path) -> None:
        header.unlink()

    cache = corrupt_then_reload(make_runtime, drop, monkeypatch)
    assert "no header" in (cache.last_error or "")


def test_missing_artifact_is_rebuilt(make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    def drop(artifact: Path, header: Path) -> None:
        artifact.unlink()

    cache = corrupt_then_reload(make_runtime, drop, monkeypatch)
    assert "unreadable" in (cache.last_error or "")


def test_header_from_another_format_version_is_rebuilt(make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    def old_format(artifact: Path, header: Path) -> None:
        meta = json.loads(header.read_text())
        meta["format"] = 0
        header.write_text(json.dumps(meta))

    cache = corrupt_then_reload(make_runtime, old_format, monkeypatch)
    assert "'format'" in (cache.last_error or "")


def test_artifact_from_an_incompatible_engine_is_rebuilt(
    make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A well-formed artifact with a consistent header, compiled by other settings: wasmtime says no."""

    def swap_in_foreign_artifact(artifact: Path, header: Path) -> None:
        foreign = bytes(wasmtime.Module(wasmtime.Engine(wasmtime.Config()), lim_guest()).serialize())
        artifact.write_bytes(foreign)
        meta = json.loads(header.read_text())
        meta["artifact_size"] = len(foreign)
        meta["artifact_sha256"] = hashlib.sha256(foreign).hexdigest()
        header.write_text(json.dumps(meta))

    cache = corrupt_then_reload(make_runtime, swap_in_foreign_artifact, monkeypatch)
    assert "wasmtime rejected the artifact" in (cache.last_error or "")


# -- atomic writes -------------------------------------------------------------------------------

def test_failed_write_leaves_no_entry_and_no_temp_file(
    make_runtime: MakeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime()

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    assert serves_requests(runtime, lim_guest())  # the cache is an optimisation: compiling still works
    monkeypatch.undo()

    cache = cache_of(runtime)
    assert cache.stats.write_errors == 1
    assert "No space left" in (cache.last_error or "")
    assert entry_files(tmp_path / "cache") == []


def test_no_temp_files_remain_after_writes(make_runtime: MakeRuntime, tmp_path: Path) -> None:
    runtime = make_runtime()
    for tag in (b"a", b"b", b"c"):
        runtime.compile(lim_guest(tag))
    names = entry_files(tmp_path / "cache")
    assert len(names) == 6
    assert all(n.endswith((".cwasm", ".json")) for n in names)


def test_unwritable_cache_directory_still_compiles(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    runtime = Runtime(cache_dir=str(blocker / "cache"))
    try:
        assert serves_requests(runtime, lim_guest())
        assert cache_of(runtime).stats.write_errors == 1
    finally:
        runtime.close()


# -- size cap and LRU eviction --------------------------------------------------------------------

def test_size_cap_evicts_the_least_recently_used_entry(make_runtime: MakeRuntime, tmp_path: Path) -> None:
    engine = make_runtime().engine
    cache_dir = tmp_path / "cache"
    modules = {tag: lim_guest(tag) for tag in (b"a", b"b", b"c")}
    digests = {tag: hashlib.sha256(m).hexdigest() for tag, m in modules.items()}
    probe = ModuleCache(tmp_path / "probe", engine)
    probe.load_or_compile(modules[b"a"], digests[b"a"])
    one_entry = probe.paths(digests[b"a"])[0].stat().st_size

    cache = ModuleCache(cache_dir, engine, max_bytes=2 * one_entry + one_entry // 2)
    cache.load_or_compile(modules[b"a"], digests[b"a"])
    cache.load_or_compile(modules[b"b"], digests[b"b"])
    old = 1_000_000_000
    os.utime(cache.paths(digests[b"a"])[1], (old, old))
    os.utime(cache.paths(digests[b"b"])[1], (old + 10, old + 10))
    cache.load_or_compile(modules[b"a"], digests[b"a"])  # a hit makes "a" the most recent
    assert cache.stats.hits == 1

    cache.load_or_compile(modules[b"c"], digests[b"c"])

    assert cache.stats.evictions == 1
    assert cache.paths(digests[b"a"])[0].exists()
    assert not cache.paths(digests[b"b"])[0].exists()
    assert not cache.paths(digests[b"b"])[1].exists()
    assert cache.paths(digests[b"c"])[0].exists()


def test_entry_larger_than_the_cap_is_still_kept(make_runtime: MakeRuntime, tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path / "other-cache", make_runtime().engine, max_bytes=1)
    module = lim_guest()
    digest = hashlib.sha256(module).hexdigest()
    cache.load_or_compile(module, digest)
    assert cache.paths(digest)[0].exists()
    cache.load_or_compile(module, digest)
    assert cache.stats.hits == 1
