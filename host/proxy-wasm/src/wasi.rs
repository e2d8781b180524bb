//! The WASI preview1 functions the proxy-wasm SDKs import, answered as Envoy's host does:
//! stdout and stderr become log lines, there is no filesystem, no sockets and no arguments,
//! clocks and randomness work, `poll_oneoff` never sleeps (a worker must not block), and
//! `proc_exit` logs instead of killing the VM. Every function is registered under both
//! `wasi_snapshot_preview1` and `wasi_unstable`.

use rustygate_wasm_runtime::wasmtime::{Caller, IntoFunc, Linker, Result};

use crate::memory::{read, write, write_u32};
use crate::state::HostState;

type C<'a> = Caller<'a, HostState>;

const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const FAULT: i32 = 21;
const INVAL: i32 = 28;
const NOENT: i32 = 44;
const NOSYS: i32 = 52;
const NOTSUP: i32 = 58;

fn both<P, R>(
    l: &mut Linker<HostState>,
    name: &str,
    f: impl IntoFunc<HostState, P, R> + Clone,
) -> Result<()> {
    l.func_wrap("wasi_snapshot_preview1", name, f.clone())?;
    l.func_wrap("wasi_unstable", name, f)?;
    Ok(())
}

fn std_fd(fd: i32) -> i32 {
    if fd == 1 || fd == 2 { SUCCESS } else { BADF }
}

/// Registers the WASI set.
pub(crate) fn register(l: &mut Linker<HostState>) -> Result<()> {
    both(
        l,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, n: i32, ret: i32| -> i32 {
            if fd != 1 && fd != 2 {
                return BADF;
            }
            let mut out = Vec::new();
            for i in 0..n.max(0) {
                let Ok(iov) = read(&c, iovs.wrapping_add(i * 8), 8) else {
                    return FAULT;
                };
                let ptr = i32::from_le_bytes(iov[0..4].try_into().unwrap());
                let len = i32::from_le_bytes(iov[4..8].try_into().unwrap());
                match read(&c, ptr, len) {
                    Ok(b) => out.extend_from_slice(&b),
                    Err(_) => return FAULT,
                }
            }
            let written = out.len() as u32;
            c.data_mut().write_output(fd as usize, &out);
            write_u32(&mut c, ret, written).map_or(FAULT, |_| SUCCESS)
        },
    )?;
    both(
        l,
        "fd_pwrite",
        |_c: C<'_>, _fd: i32, _iovs: i32, _n: i32, _off: i64, _ret: i32| -> i32 { NOSYS },
    )?;
    both(
        l,
        "fd_read",
        |_c: C<'_>, _fd: i32, _iovs: i32, _n: i32, _ret: i32| -> i32 { NOSYS },
    )?;
    both(
        l,
        "fd_pread",
        |_c: C<'_>, _fd: i32, _iovs: i32, _n: i32, _off: i64, _ret: i32| -> i32 { NOSYS },
    )?;
    both(
        l,
        "fd_seek",
        |_c: C<'_>, fd: i32, _off: i64, _whence: i32, _ret: i32| -> i32 { std_fd(fd) },
    )?;
    both(l, "fd_tell", |_c: C<'_>, fd: i32, _ret: i32| -> i32 {
        std_fd(fd)
    })?;
    both(l, "fd_close", |_c: C<'_>, _fd: i32| -> i32 { SUCCESS })?;
    both(
        l,
        "fd_fdstat_get",
        |mut c: C<'_>, fd: i32, ret: i32| -> i32 {
            if fd != 1 && fd != 2 {
                return BADF;
            }
            // filetype character device (2), no flags, rights_base = FD_WRITE (64).
            let mut stat = [0u8; 24];
            stat[0] = 2;
            stat[8..16].copy_from_slice(&64u64.to_le_bytes());
            write(&mut c, ret, &stat).map_or(FAULT, |_| SUCCESS)
        },
    )?;
    both(
        l,
        "fd_fdstat_set_flags",
        |_c: C<'_>, _fd: i32, _flags: i32| -> i32 { NOSYS },
    )?;
    both(
        l,
        "fd_fdstat_set_rights",
        |_c: C<'_>, fd: i32, _b: i64, _i: i64| -> i32 { std_fd(fd) },
    )?;
    both(
        l,
        "fd_prestat_get",
        |_c: C<'_>, _fd: i32, _ret: i32| -> i32 { BADF },
    )?;
    both(
        l,
        "fd_prestat_dir_name",
        |_c: C<'_>, _fd: i32, _p: i32, _l: i32| -> i32 { NOSYS },
    )?;
    both(
        l,
        "fd_filestat_get",
        |_c: C<'_>, _fd: i32, _ret: i32| -> i32 { BADF },
    )?;
    both(
        l,
        "fd_filestat_set_size",
        |_c: C<'_>, fd: i32, _s: i64| -> i32 { std_fd(fd) },
    )?;
    both(
        l,
        "fd_filestat_set_times",
        |_c: C<'_>, fd: i32, _a: i64, _m: i64, _f: i32| -> i32 { std_fd(fd) },
    )?;
    both(
        l,
        "fd_advise",
        |_c: C<'_>, fd: i32, _o: i64, _l: i64, _a: i32| -> i32 { std_fd(fd) },
    )?;
    both(
        l,
        "fd_allocate",
        |_c: C<'_>, fd: i32, _o: i64, _l: i64| -> i32 { std_fd(fd) },
    )?;
    both(l, "fd_datasync", |_c: C<'_>, fd: i32| -> i32 { std_fd(fd) })?;
    both(l, "fd_sync", |_c: C<'_>, fd: i32| -> i32 { std_fd(fd) })?;
    both(
        l,
        "fd_readdir",
        |_c: C<'_>, _fd: i32, _b: i32, _l: i32, _ck: i64, _r: i32| -> i32 { BADF },
    )?;
    both(l, "fd_renumber", |_c: C<'_>, _a: i32, _b: i32| -> i32 {
        NOTSUP
    })?;
    both(
        l,
        "path_open",
        |_c: C<'_>,
         _fd: i32,
         _df: i32,
         _p: i32,
         _pl: i32,
         _of: i32,
         _rb: i64,
         _ri: i64,
         _ff: i32,
         _ret: i32|
         -> i32 { NOENT },
    )?;
    both(
        l,
        "path_filestat_get",
        |_c: C<'_>, _fd: i32, _f: i32, _p: i32, _l: i32, _r: i32| -> i32 { NOTSUP },
    )?;
    both(
        l,
        "path_filestat_set_times",
        |_c: C<'_>, _fd: i32, _f: i32, _p: i32, _l: i32, _a: i64, _m: i64, _ff: i32| -> i32 {
            NOTSUP
        },
    )?;
    both(
        l,
        "path_create_directory",
        |_c: C<'_>, _fd: i32, _p: i32, _l: i32| -> i32 { NOTSUP },
    )?;
    both(
        l,
        "path_remove_directory",
        |_c: C<'_>, _fd: i32, _p: i32, _l: i32| -> i32 { NOTSUP },
    )?;
    both(
        l,
        "path_unlink_file",
        |_c: C<'_>, _fd: i32, _p: i32, _l: i32| -> i32 { NOTSUP },
    )?;
    both(
        l,
        "path_readlink",
        |_c: C<'_>, _fd: i32, _p: i32, _l: i32, _b: i32, _bl: i32, _r: i32| -> i32 { NOTSUP },
    )?;
    both(
        l,
        "path_rename",
        |_c: C<'_>, _fd: i32, _p: i32, _l: i32, _fd2: i32, _p2: i32, _l2: i32| -> i32 { NOTSUP },
    )?;
    both(
        l,
        "path_link",
        |_c: C<'_>, _fd: i32, _f: i32, _p: i32, _l: i32, _fd2: i32, _p2: i32, _l2: i32| -> i32 {
            NOTSUP
        },
    )?;
    both(
        l,
        "path_symlink",
        |_c: C<'_>, _p: i32, _l: i32, _fd: i32, _p2: i32, _l2: i32| -> i32 { NOTSUP },
    )?;
    both(
        l,
        "sock_accept",
        |_c: C<'_>, _fd: i32, _f: i32, _r: i32| -> i32 { NOTSUP },
    )?;
    both(
        l,
        "sock_recv",
        |_c: C<'_>, _fd: i32, _b: i32, _l: i32, _f: i32, _r: i32, _rf: i32| -> i32 { NOTSUP },
    )?;
    both(
        l,
        "sock_send",
        |_c: C<'_>, _fd: i32, _b: i32, _l: i32, _f: i32, _r: i32| -> i32 { NOTSUP },
    )?;
    both(l, "sock_shutdown", |_c: C<'_>, _fd: i32, _h: i32| -> i32 {
        NOTSUP
    })?;
    both(
        l,
        "environ_sizes_get",
        |mut c: C<'_>, count: i32, size: i32| -> i32 {
            write_u32(&mut c, count, 0)
                .and_then(|_| write_u32(&mut c, size, 0))
                .map_or(FAULT, |_| SUCCESS)
        },
    )?;
    both(l, "environ_get", |_c: C<'_>, _e: i32, _b: i32| -> i32 {
        SUCCESS
    })?;
    both(
        l,
        "args_sizes_get",
        |mut c: C<'_>, count: i32, size: i32| -> i32 {
            write_u32(&mut c, count, 0)
                .and_then(|_| write_u32(&mut c, size, 0))
                .map_or(FAULT, |_| SUCCESS)
        },
    )?;
    both(l, "args_get", |_c: C<'_>, _a: i32, _b: i32| -> i32 {
        SUCCESS
    })?;
    both(
        l,
        "clock_time_get",
        |mut c: C<'_>, id: i32, _precision: i64, ret: i32| -> i32 {
            let nanos = match id {
                0 => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                1 => c.data().shared.started.elapsed().as_nanos() as u64,
                _ => return NOTSUP,
            };
            write(&mut c, ret, &nanos.to_le_bytes()).map_or(FAULT, |_| SUCCESS)
        },
    )?;
    both(
        l,
        "clock_res_get",
        |mut c: C<'_>, id: i32, ret: i32| -> i32 {
            if !(0..=1).contains(&id) {
                return NOTSUP;
            }
            write(&mut c, ret, &1u64.to_le_bytes()).map_or(FAULT, |_| SUCCESS)
        },
    )?;
    both(l, "random_get", |mut c: C<'_>, buf: i32, len: i32| -> i32 {
        let len = len as u32 as usize;
        if len > 65_536 {
            return INVAL;
        }
        let mut bytes = vec![0u8; len];
        c.data_mut().rng.fill(&mut bytes);
        write(&mut c, buf, &bytes).map_or(FAULT, |_| SUCCESS)
    })?;
    both(l, "sched_yield", |_c: C<'_>| -> i32 { SUCCESS })?;
    both(
        l,
        "poll_oneoff",
        |mut c: C<'_>, _in: i32, _out: i32, _n: i32, ret: i32| -> i32 {
            write_u32(&mut c, ret, 0).map_or(FAULT, |_| SUCCESS)
        },
    )?;
    both(l, "proc_exit", |c: C<'_>, code: i32| {
        let plugin = c
            .data()
            .root_of(c.data().effective)
            .map_or("", |r| &r.plugin)
            .to_owned();
        tracing::error!(target: "filter", filter = %plugin, code, "filter called proc_exit; ignored");
    })?;
    Ok(())
}
