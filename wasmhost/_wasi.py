"""WASI preview1, under both ``wasi_snapshot_preview1`` and ``wasi_unstable``.

A plugin gets no file system, sockets or arguments: stdout and stderr become plugin
log lines, environment variables come only from the VM's configured ``env`` (never the
proxy's own environment), clocks come from the :class:`~wasmhost.Environment`, and
randomness from the OS CSPRNG. Every other call answers the errno cpp-host answers, so
toolchain runtimes (wasi-libc, Rust std, TinyGo, Go wasip1) behave as under Envoy.

Signatures are preview1's own (checked against wasmtime's WASI linker in the tests);
cpp-host declares ``path_link`` and ``path_symlink`` with too few parameters, which would
make modules importing them fail to link. A guest pointer out of bounds answers FAULT.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from ._abi import LogLevel
from ._capi import ExitRequested
from ._registry import wasi
from .limits import MAX_WASI_IOVECS

if TYPE_CHECKING:
    from ._vm import WasmVM

SUCCESS = 0
BADF = 8
FAULT = 21
INVAL = 28
NOENT = 44
NOSYS = 52
NOTDIR = 54
NOTSUP = 58

STDOUT = 1
STDERR = 2
CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
RIGHTS_FD_WRITE = 1 << 6
_STDIO = (STDOUT, STDERR)
_FDSTAT_STDIO = struct.pack("<BxHxxxxQQ", 0, 0, RIGHTS_FD_WRITE, 0)  # 24-byte __wasi_fdstat_t


def _plugin_log(vm: WasmVM, level: LogLevel, message: str) -> None:
    """Log as the plugin whose callback is running (the VM's own plugin during start)."""
    if level < vm.environment.log_level:
        return
    spec = vm.spec_for_current()
    if spec is None:
        vm.log(level, message)
    else:
        vm.environment.log(spec, level, message)


def _write_stdio(vm: WasmVM, fd: int, iovs: int, iovs_len: int, nwritten_p: int) -> int:
    """Gather the iovecs into one log line (INFO for stdout, ERROR for stderr)."""
    if fd not in _STDIO:
        return BADF
    if iovs_len > MAX_WASI_IOVECS:
        return INVAL
    memory = vm.memory
    table = memory.read(iovs, 8 * iovs_len) if iovs_len else b""
    if table is None:
        return FAULT
    cap = vm.limits.max_log_message
    parts: list[bytes] = []
    kept = 0
    total = 0
    for i in range(iovs_len):
        buf, length = struct.unpack_from("<II", table, 8 * i)
        if length == 0:
            continue
        if not memory.fits(buf, length):
            return FAULT
        total += length
        if kept < cap:
            take = min(length, cap - kept)
            parts.append(memory.view[buf : buf + take].tobytes())
            kept += take
    if not memory.fits(nwritten_p, 4):
        return FAULT
    if total:
        data = b"".join(parts)
        if data.endswith(b"\n"):
            data = data[:-1]
        level = LogLevel.INFO if fd == STDOUT else LogLevel.ERROR
        _plugin_log(vm, level, data.decode("utf-8", "replace"))
    memory.write_u32(nwritten_p, total)
    return SUCCESS


def _stdio_only(fd: int) -> int:
    return SUCCESS if fd in _STDIO else BADF


# -- fd: stdout/stderr are the only descriptors ------------------------------------------------

@wasi("fd_write", "iiii", during_alloc=True)
def fd_write(vm: WasmVM, fd: int, iovs: int, iovs_len: int, nwritten_p: int) -> int:
    """Envoy logs fd 1 at INFO and fd 2 at ERROR (one trailing newline stripped); we also cap iovecs and line size."""
    return _write_stdio(vm, fd, iovs, iovs_len, nwritten_p)


@wasi("fd_pwrite", "iiiIi")
def fd_pwrite(vm: WasmVM, fd: int, iovs: int, iovs_len: int, _offset: int, nwritten_p: int) -> int:
    """Envoy treats it as fd_write on fd 1/2, ignoring the offset; BADF otherwise."""
    return _write_stdio(vm, fd, iovs, iovs_len, nwritten_p)


@wasi("fd_read", "iiii")
def fd_read(vm: WasmVM, fd: int, iovs: int, iovs_len: int, nread_p: int) -> int:
    """Envoy reads nothing: NOSYS."""
    return NOSYS


@wasi("fd_pread", "iiiIi")
def fd_pread(vm: WasmVM, fd: int, iovs: int, iovs_len: int, offset: int, nread_p: int) -> int:
    """Envoy reads nothing: NOSYS."""
    return NOSYS


@wasi("fd_seek", "iIii")
def fd_seek(vm: WasmVM, fd: int, offset: int, whence: int, newoffset_p: int) -> int:
    """Envoy logs an error and answers SUCCESS without writing the new offset; same here."""
    _plugin_log(vm, LogLevel.ERROR, "wasi fd_seek is not supported")
    return SUCCESS


@wasi("fd_close", "i")
def fd_close(vm: WasmVM, fd: int) -> int:
    """Envoy logs an error and answers SUCCESS; same here."""
    _plugin_log(vm, LogLevel.ERROR, "wasi fd_close is not supported")
    return SUCCESS


@wasi("fd_fdstat_get", "ii")
def fd_fdstat_get(vm: WasmVM, fd: int, stat_p: int) -> int:
    """Envoy writes a zero fdstat with rights_base = FD_WRITE for fd 1/2, BADF otherwise; we answer FAULT on a bad pointer."""
    if fd not in _STDIO:
        return BADF
    return SUCCESS if vm.memory.write(stat_p, _FDSTAT_STDIO) else FAULT


@wasi("fd_fdstat_set_flags", "ii")
def fd_fdstat_set_flags(vm: WasmVM, fd: int, flags: int) -> int:
    """Envoy: NOSYS (no flag means anything for a log stream)."""
    return NOSYS


@wasi("fd_fdstat_set_rights", "iII")
def fd_fdstat_set_rights(vm: WasmVM, fd: int, rights_base: int, rights_inheriting: int) -> int:
    """Envoy pretends success on fd 1/2, BADF otherwise."""
    return _stdio_only(fd)


@wasi("fd_prestat_get", "ii")
def fd_prestat_get(vm: WasmVM, fd: int, prestat_p: int) -> int:
    """Envoy: BADF, which tells wasi-libc there are no preopened directories."""
    return BADF


@wasi("fd_prestat_dir_name", "iii")
def fd_prestat_dir_name(vm: WasmVM, fd: int, path_p: int, path_len: int) -> int:
    """Envoy: NOSYS."""
    return NOSYS


@wasi("fd_filestat_get", "ii")
def fd_filestat_get(vm: WasmVM, fd: int, filestat_p: int) -> int:
    """Envoy: BADF for every descriptor."""
    return BADF


@wasi("fd_filestat_set_size", "iI")
def fd_filestat_set_size(vm: WasmVM, fd: int, size: int) -> int:
    """Envoy pretends success on fd 1/2, BADF otherwise."""
    return _stdio_only(fd)


@wasi("fd_filestat_set_times", "iIIi")
def fd_filestat_set_times(vm: WasmVM, fd: int, atim: int, mtim: int, fst_flags: int) -> int:
    """Envoy pretends success on fd 1/2, BADF otherwise."""
    return _stdio_only(fd)


@wasi("fd_advise", "iIIi")
def fd_advise(vm: WasmVM, fd: int, offset: int, length: int, advice: int) -> int:
    """Envoy: SUCCESS for any descriptor (advice is only a hint)."""
    return SUCCESS


@wasi("fd_allocate", "iII")
def fd_allocate(vm: WasmVM, fd: int, offset: int, length: int) -> int:
    """Envoy pretends success on fd 1/2, BADF otherwise."""
    return _stdio_only(fd)


@wasi("fd_datasync", "i")
def fd_datasync(vm: WasmVM, fd: int) -> int:
    """Envoy pretends success on fd 1/2, BADF otherwise."""
    return _stdio_only(fd)


@wasi("fd_sync", "i")
def fd_sync(vm: WasmVM, fd: int) -> int:
    """Envoy pretends success on fd 1/2, BADF otherwise."""
    return _stdio_only(fd)


@wasi("fd_tell", "ii")
def fd_tell(vm: WasmVM, fd: int, offset_p: int) -> int:
    """Envoy writes offset 0 for fd 1/2, BADF otherwise."""
    if fd not in _STDIO:
        return BADF
    return SUCCESS if vm.memory.write_u64(offset_p, 0) else FAULT


@wasi("fd_readdir", "iiiIi")
def fd_readdir(vm: WasmVM, fd: int, buf: int, buf_len: int, cookie: int, bufused_p: int) -> int:
    """Envoy writes 0 bytes used and means ENOTDIR but returns 20 (EXIST); we return NOTDIR (54)."""
    return NOTDIR if vm.memory.write_u32(bufused_p, 0) else FAULT


@wasi("fd_renumber", "ii")
def fd_renumber(vm: WasmVM, fd: int, to: int) -> int:
    """Envoy: NOTSUP when both are fd 1/2, BADF otherwise."""
    return NOTSUP if fd in _STDIO and to in _STDIO else BADF


# -- paths: there is no file system -------------------------------------------------------------

@wasi("path_open", "iiiiiIIii")
def path_open(
    vm: WasmVM, fd: int, dirflags: int, path: int, path_len: int, oflags: int,
    rights_base: int, rights_inheriting: int, fdflags: int, opened_fd_p: int,
) -> int:
    """Envoy: NOENT for every path."""
    return NOENT


@wasi("path_filestat_get", "iiiii")
def path_filestat_get(vm: WasmVM, fd: int, flags: int, path: int, path_len: int, filestat_p: int) -> int:
    """Envoy: NOTSUP."""
    return NOTSUP


@wasi("path_filestat_set_times", "iiiiIIi")
def path_filestat_set_times(
    vm: WasmVM, fd: int, flags: int, path: int, path_len: int, atim: int, mtim: int, fst_flags: int
) -> int:
    """Envoy: NOTSUP."""
    return NOTSUP


@wasi("path_create_directory", "iii")
def path_create_directory(vm: WasmVM, fd: int, path: int, path_len: int) -> int:
    """Envoy: NOTSUP."""
    return NOTSUP


@wasi("path_remove_directory", "iii")
def path_remove_directory(vm: WasmVM, fd: int, path: int, path_len: int) -> int:
    """Envoy: NOTSUP."""
    return NOTSUP


@wasi("path_unlink_file", "iii")
def path_unlink_file(vm: WasmVM, fd: int, path: int, path_len: int) -> int:
    """Envoy: NOTSUP."""
    return NOTSUP


@wasi("path_readlink", "iiiiii")
def path_readlink(vm: WasmVM, fd: int, path: int, path_len: int, buf: int, buf_len: int, bufused_p: int) -> int:
    """Envoy writes 0 bytes used and answers NOTSUP."""
    return NOTSUP if vm.memory.write_u32(bufused_p, 0) else FAULT


@wasi("path_rename", "iiiiii")
def path_rename(vm: WasmVM, fd: int, old_path: int, old_len: int, new_fd: int, new_path: int, new_len: int) -> int:
    """Envoy: NOTSUP."""
    return NOTSUP


@wasi("path_link", "iiiiiii")
def path_link(
    vm: WasmVM, old_fd: int, old_flags: int, old_path: int, old_len: int, new_fd: int, new_path: int, new_len: int
) -> int:
    """Envoy: NOTSUP (cpp-host declares 6 parameters; preview1's 7 are used here so modules link)."""
    return NOTSUP


@wasi("path_symlink", "iiiii")
def path_symlink(vm: WasmVM, old_path: int, old_len: int, fd: int, new_path: int, new_len: int) -> int:
    """Envoy: NOTSUP (cpp-host declares 4 parameters; preview1's 5 are used here so modules link)."""
    return NOTSUP


# -- sockets: none ------------------------------------------------------------------------------

@wasi("sock_accept", "iii")
def sock_accept(vm: WasmVM, fd: int, flags: int, fd_p: int) -> int:
    """Envoy writes fd 0 (as 8 bytes) and answers NOTSUP; we write the 4-byte fd preview1 defines."""
    return NOTSUP if vm.memory.write_u32(fd_p, 0) else FAULT


@wasi("sock_recv", "iiiiii")
def sock_recv(vm: WasmVM, fd: int, ri_data: int, ri_len: int, ri_flags: int, nread_p: int, roflags_p: int) -> int:
    """Envoy writes 0 bytes received and 0 flags, then answers NOTSUP."""
    memory = vm.memory
    if not memory.write_u32(nread_p, 0) or not memory.write(roflags_p, b"\0\0"):
        return FAULT
    return NOTSUP


@wasi("sock_send", "iiiii")
def sock_send(vm: WasmVM, fd: int, si_data: int, si_len: int, si_flags: int, nsent_p: int) -> int:
    """Envoy writes 0 bytes sent and answers NOTSUP."""
    return NOTSUP if vm.memory.write_u32(nsent_p, 0) else FAULT


@wasi("sock_shutdown", "ii")
def sock_shutdown(vm: WasmVM, fd: int, how: int) -> int:
    """Envoy: NOTSUP."""
    return NOTSUP


# -- environment and arguments ----------------------------------------------------------------

def _environ(vm: WasmVM) -> list[bytes]:
    return [f"{key}={value}".encode() + b"\0" for key, value in vm.env.items()]


@wasi("environ_sizes_get", "ii")
def environ_sizes_get(vm: WasmVM, count_p: int, size_p: int) -> int:
    """Envoy counts only the VM's configured variables (never the proxy's environment); same here."""
    entries = _environ(vm)
    memory = vm.memory
    if not memory.fits(count_p, 4) or not memory.fits(size_p, 4):
        return FAULT
    memory.write_u32(count_p, len(entries))
    memory.write_u32(size_p, sum(len(e) for e in entries))
    return SUCCESS


@wasi("environ_get", "ii")
def environ_get(vm: WasmVM, array_p: int, buf_p: int) -> int:
    """Envoy writes ``KEY=VALUE\\0`` strings and their pointers; we check all bounds before writing anything."""
    entries = _environ(vm)
    memory = vm.memory
    blob = b"".join(entries)
    if not memory.fits(array_p, 4 * len(entries)) or not memory.fits(buf_p, len(blob)):
        return FAULT
    pointers = []
    offset = buf_p
    for entry in entries:
        pointers.append(offset & 0xFFFFFFFF)
        offset += len(entry)
    memory.write(array_p, struct.pack(f"<{len(pointers)}I", *pointers))
    memory.write(buf_p, blob)
    return SUCCESS


@wasi("args_sizes_get", "ii")
def args_sizes_get(vm: WasmVM, argc_p: int, size_p: int) -> int:
    """Envoy: no arguments (writes 0 and 0)."""
    memory = vm.memory
    if not memory.fits(argc_p, 4) or not memory.fits(size_p, 4):
        return FAULT
    memory.write_u32(argc_p, 0)
    memory.write_u32(size_p, 0)
    return SUCCESS


@wasi("args_get", "ii")
def args_get(vm: WasmVM, argv_p: int, buf_p: int) -> int:
    """Envoy: SUCCESS, writes nothing (there are no arguments)."""
    return SUCCESS


# -- clocks, randomness, scheduling, exit ---------------------------------------------------------

@wasi("clock_time_get", "iIi", during_alloc=True)
def clock_time_get(vm: WasmVM, clock_id: int, precision: int, time_p: int) -> int:
    """Envoy: realtime and monotonic nanoseconds from the host clocks, NOTSUP for CPU-time clocks."""
    if clock_id == CLOCK_REALTIME:
        now = vm.environment.now_ns()
    elif clock_id == CLOCK_MONOTONIC:
        now = vm.environment.monotonic_ns()
    else:
        return NOTSUP
    return SUCCESS if vm.memory.write_u64(time_p, now) else FAULT


@wasi("clock_res_get", "ii")
def clock_res_get(vm: WasmVM, clock_id: int, resolution_p: int) -> int:
    """Envoy: 1 ns for realtime and monotonic, NOTSUP otherwise."""
    if clock_id not in (CLOCK_REALTIME, CLOCK_MONOTONIC):
        return NOTSUP
    return SUCCESS if vm.memory.write_u64(resolution_p, 1) else FAULT


@wasi("random_get", "ii")
def random_get(vm: WasmVM, buf: int, buf_len: int) -> int:
    """Envoy: CSPRNG bytes, INVAL over the 64 KiB cap, SUCCESS for zero bytes."""
    if buf_len > vm.limits.max_random_bytes:
        return INVAL
    if buf_len == 0:
        return SUCCESS
    return SUCCESS if vm.memory.write(buf, os.urandom(buf_len)) else FAULT


@wasi("sched_yield", "")
def sched_yield(vm: WasmVM) -> int:
    """Envoy: SUCCESS (a single-threaded guest has nobody to yield to)."""
    return SUCCESS


@wasi("poll_oneoff", "iiii", during_alloc=True)
def poll_oneoff(vm: WasmVM, subscriptions: int, events: int, nsubscriptions: int, nevents_p: int) -> int:
    """Envoy reports zero events and SUCCESS without waiting (Go's wasip1 runtime aborts on an error)."""
    return SUCCESS if vm.memory.write_u32(nevents_p, 0) else FAULT


@wasi("proc_exit", "i", "")
def proc_exit(vm: WasmVM, code: int) -> None:
    """Envoy logs an error and returns into the guest; we unwind it as a trap (exit 0 during VM start is clean)."""
    raise ExitRequested(code)


@wasi("proc_raise", "i")
def proc_raise(vm: WasmVM, signal: int) -> int:
    """Not linked by Envoy (the 46th preview1 function); NOTSUP here so modules importing it still link."""
    return NOTSUP
