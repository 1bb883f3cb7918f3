//! A VFS over SQLite's default one that writes a commit's WAL frames with one system call.
//!
//! SQLite writes each WAL frame as two `pwrite`s, its 24-byte header and then its page, so an
//! audit commit of five or six pages costs ten or twelve system calls, each of which also takes
//! the file's lock and updates its modification time (measured here: 12.3 µs of CPU for six
//! frames written that way against 4.7 µs for one write of the same bytes). Through this VFS a
//! WAL file gathers the frames SQLite appends one after another and writes them at once when the
//! commit's last frame is complete, inside the call that writes it, so a failure (a full disk)
//! is that call's error and the commit fails as it would have.
//!
//! Nothing buffered outlives the commit: SQLite publishes a commit to other connections (the
//! WAL index's header) only after `walFrames` has written its last frame, the one whose header
//! carries the database's size, and that write flushes. Every other use of the file (a read, a
//! sync, a truncation, its size, a lock, a file control, closing it, a write anywhere but right
//! after the last one) flushes first. Frames written for a cache spill, which carry no commit
//! mark, stay gathered until one of those or the commit. Only WAL files are wrapped; the
//! database file, its shared memory and journals are the default VFS's own, so its locks and
//! shared-memory index behave exactly as without this VFS.

use rusqlite::ffi;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

/// The VFS's name, for connections that open a file through it.
const NAME: &CStr = c"parallax-wal";

/// A WAL frame's header: page number, database size after a commit (zero otherwise), salts and
/// checksums.
const FRAME_HEADER: usize = 24;

/// Gathered bytes past which a run is written even before its commit (a long transaction).
/// The default VFS writes at most 128 kB less a byte per `pwrite` (it masks the length to 17
/// bits, so a run of exactly 128 kB would write nothing and read as a full disk): a run stops
/// short of that by more than the largest page (64 kB) and its header.
const MAX_GATHERED: usize = 60 << 10;

/// The capacity a gathering buffer keeps between commits.
const KEEP_CAPACITY: usize = 64 << 10;

/// Registers the VFS once; its name, or `None` if SQLite has no default VFS to wrap (then
/// connections open through the default).
pub(super) fn name() -> Option<&'static str> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    // SAFETY: `register` only reads the default VFS SQLite returns and hands SQLite a VFS that
    // lives for the rest of the process.
    let registered = *REGISTERED.get_or_init(|| unsafe { register() });
    registered.then(|| NAME.to_str().expect("the name is ASCII"))
}

unsafe fn register() -> bool {
    // SAFETY (whole function): the default VFS SQLite returns lives for the process.
    unsafe {
        let root = ffi::sqlite3_vfs_find(std::ptr::null());
        if root.is_null() {
            return false;
        }
        let vfs = Box::new(ffi::sqlite3_vfs {
            iVersion: (*root).iVersion.min(3),
            szOsFile: (std::mem::size_of::<WalFile>() as c_int) + (*root).szOsFile,
            mxPathname: (*root).mxPathname,
            pNext: std::ptr::null_mut(),
            zName: NAME.as_ptr(),
            pAppData: root.cast(),
            xOpen: Some(open),
            xDelete: Some(delete),
            xAccess: Some(access),
            xFullPathname: Some(full_pathname),
            xDlOpen: Some(dl_open),
            xDlError: Some(dl_error),
            xDlSym: Some(dl_sym),
            xDlClose: Some(dl_close),
            xRandomness: Some(randomness),
            xSleep: Some(sleep),
            xCurrentTime: Some(current_time),
            xGetLastError: Some(get_last_error),
            xCurrentTimeInt64: Some(current_time_int64),
            xSetSystemCall: Some(set_system_call),
            xGetSystemCall: Some(get_system_call),
            xNextSystemCall: Some(next_system_call),
        });
        ffi::sqlite3_vfs_register(Box::leak(vfs), 0) == ffi::SQLITE_OK
    }
}

/// A WAL file: the default VFS's file, allocated right after this header, and the frames
/// gathered for it.
#[repr(C)]
struct WalFile {
    /// Must come first: SQLite sees a `sqlite3_file`.
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    run: Run,
}

/// Bytes SQLite wrote one after another and not yet to the file.
struct Run {
    buf: Vec<u8>,
    /// Where `buf` goes in the file.
    at: i64,
    /// Just past the last byte SQLite wrote (gathered or not).
    end: i64,
    next: Next,
}

/// What the next contiguous write is expected to be.
#[derive(Clone, Copy)]
enum Next {
    /// A frame's header (or nothing gathered).
    Header,
    /// The page of a frame whose header was just gathered (so the run is never empty then);
    /// `commit` if that header marks the transaction's last frame.
    Page { commit: bool },
}

/// The default VFS, which this one wraps.
unsafe fn root(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: every VFS registered here keeps the default VFS as its app data.
    unsafe { (*vfs).pAppData.cast() }
}

/// The default VFS's file inside a `WalFile`.
unsafe fn real_of(file: *mut WalFile) -> *mut ffi::sqlite3_file {
    // SAFETY: SQLite allocates `szOsFile` bytes, the header's size and the default VFS's file.
    unsafe { file.cast::<u8>().add(std::mem::size_of::<WalFile>()).cast() }
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY (whole function): SQLite passes a file of `szOsFile` bytes, which holds a
    // `WalFile` and the default VFS's file after it; anything but a WAL file is opened by the
    // default VFS in place, as if this VFS were not there.
    unsafe {
        let root = root(vfs);
        let root_open = (*root).xOpen.expect("a VFS opens files");
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return root_open(root, name, file, flags, out_flags);
        }
        let wal = file.cast::<WalFile>();
        let real = real_of(wal);
        (*wal).base.pMethods = std::ptr::null();
        let rc = root_open(root, name, real, flags, out_flags);
        if (*real).pMethods.is_null() {
            return rc;
        }
        std::ptr::addr_of_mut!((*wal).real).write(real);
        std::ptr::addr_of_mut!((*wal).run).write(Run {
            buf: Vec::new(),
            at: 0,
            end: 0,
            next: Next::Header,
        });
        (*wal).base.pMethods = &WAL_METHODS;
        rc
    }
}

/// Version 1: SQLite uses shared memory and memory maps on the database file, never the WAL.
static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// The `WalFile` and the default VFS's methods for it.
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (&'a mut WalFile, &'a ffi::sqlite3_io_methods) {
    // SAFETY: only files opened by `open` with `WAL_METHODS` reach these methods, and SQLite
    // uses a file from one thread at a time.
    unsafe {
        let wal = &mut *file.cast::<WalFile>();
        let methods = &*(*wal.real).pMethods;
        (wal, methods)
    }
}

/// Writes the gathered run, if any; the default VFS's answer (`SQLITE_FULL` on a full disk).
/// The run is dropped either way: a failed write fails its transaction.
unsafe fn flush(wal: &mut WalFile, methods: &ffi::sqlite3_io_methods) -> c_int {
    if wal.run.buf.is_empty() {
        return ffi::SQLITE_OK;
    }
    let run = &mut wal.run;
    // SAFETY: the buffer is valid for its length, which MAX_GATHERED keeps within c_int.
    let rc = unsafe {
        write_through(
            wal.real,
            methods,
            run.buf.as_ptr().cast(),
            run.buf.len() as c_int,
            run.at,
        )
    };
    run.buf.clear();
    run.buf.shrink_to(KEEP_CAPACITY);
    run.next = Next::Header;
    rc
}

/// One write to the default VFS's file.
unsafe fn write_through(
    real: *mut ffi::sqlite3_file,
    methods: &ffi::sqlite3_io_methods,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    #[cfg(test)]
    tests::count_write();
    // SAFETY: `data` holds `amount` bytes, as the caller was given or gathered them.
    unsafe { methods.xWrite.expect("a file writes")(real, data, amount, offset) }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY (whole function): SQLite passes `amount` readable bytes at `data`.
    unsafe {
        let (wal, methods) = parts(file);
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), amount as usize);
        let run = &mut wal.run;
        let follows = offset == run.end;
        let gathered = match run.next {
            // A frame's page right after its gathered header.
            Next::Page { commit } if follows => {
                run.buf.extend_from_slice(bytes);
                run.end = offset + i64::from(amount);
                run.next = Next::Header;
                Some(commit || run.buf.len() >= MAX_GATHERED)
            }
            // The next frame's header, right after the last write.
            Next::Header if follows && bytes.len() == FRAME_HEADER => {
                if run.buf.is_empty() {
                    run.at = offset;
                }
                run.buf.extend_from_slice(bytes);
                run.end = offset + i64::from(amount);
                let size = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                run.next = Next::Page { commit: size != 0 };
                Some(false)
            }
            _ => None,
        };
        match gathered {
            Some(true) => flush(wal, methods),
            Some(false) => ffi::SQLITE_OK,
            // Anything else (the WAL's own header, a frame rewritten in place, its checksums
            // redone) is written as it comes, after what was gathered.
            None => {
                let rc = flush(wal, methods);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                let rc = write_through(wal.real, methods, data, amount, offset);
                wal.run.end = offset + i64::from(amount);
                rc
            }
        }
    }
}

/// Flushes, then runs `then` on the default VFS's file.
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
    then: impl FnOnce(*mut ffi::sqlite3_file, &ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    // SAFETY: as `parts`.
    unsafe {
        let (wal, methods) = parts(file);
        let rc = flush(wal, methods);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        then(wal.real, methods)
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file once; the run is dropped here and never used again.
    unsafe {
        let (wal, methods) = parts(file);
        let flushed = flush(wal, methods);
        let rc = methods.xClose.expect("a file closes")(wal.real);
        std::ptr::drop_in_place(std::ptr::addr_of_mut!(wal.run));
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            rc
        }
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: forwards SQLite's own arguments.
    unsafe {
        flushed(file, |real, m| {
            m.xRead.expect("reads")(real, data, amount, offset)
        })
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: forwards SQLite's own arguments; the next write starts a run anew.
    unsafe { flushed(file, |real, m| m.xTruncate.expect("truncates")(real, size)) }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: forwards SQLite's own arguments.
    unsafe { flushed(file, |real, m| m.xSync.expect("syncs")(real, flags)) }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: forwards SQLite's own arguments.
    unsafe { flushed(file, |real, m| m.xFileSize.expect("sizes")(real, size)) }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwards SQLite's own arguments.
    unsafe { flushed(file, |real, m| m.xLock.expect("locks")(real, level)) }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: forwards SQLite's own arguments.
    unsafe { flushed(file, |real, m| m.xUnlock.expect("unlocks")(real, level)) }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: forwards SQLite's own arguments.
    unsafe {
        flushed(file, |real, m| {
            m.xCheckReservedLock.expect("checks locks")(real, out)
        })
    }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: forwards SQLite's own arguments.
    unsafe {
        flushed(file, |real, m| {
            m.xFileControl.expect("controls")(real, op, arg)
        })
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwards SQLite's own arguments.
    unsafe {
        let (wal, methods) = parts(file);
        methods.xSectorSize.expect("has sectors")(wal.real)
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwards SQLite's own arguments.
    unsafe {
        let (wal, methods) = parts(file);
        methods.xDeviceCharacteristics.expect("has characteristics")(wal.real)
    }
}

/// Defines each VFS method as the default VFS's own, called with the default VFS (`$missing`
/// when it has none).
macro_rules! forward_to_root {
    ($($name:ident => $method:ident($($arg:ident: $ty:ty),*) -> $ret:ty, $missing:expr;)*) => {$(
        unsafe extern "C" fn $name(vfs: *mut ffi::sqlite3_vfs, $($arg: $ty),*) -> $ret {
            // SAFETY: forwards SQLite's own arguments to the VFS this one wraps.
            unsafe {
                let root = root(vfs);
                match (*root).$method {
                    Some(f) => f(root, $($arg),*),
                    None => $missing,
                }
            }
        }
    )*};
}

// The VFS's methods other than opening a file.
forward_to_root! {
    delete => xDelete(name: *const c_char, sync: c_int) -> c_int, ffi::SQLITE_IOERR_DELETE;
    access => xAccess(name: *const c_char, flags: c_int, out: *mut c_int) -> c_int,
        ffi::SQLITE_IOERR_ACCESS;
    full_pathname => xFullPathname(name: *const c_char, len: c_int, out: *mut c_char) -> c_int,
        ffi::SQLITE_ERROR;
    dl_open => xDlOpen(name: *const c_char) -> *mut c_void, std::ptr::null_mut();
    dl_error => xDlError(len: c_int, out: *mut c_char) -> (), ();
    dl_sym => xDlSym(handle: *mut c_void, symbol: *const c_char)
        -> Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)>, None;
    dl_close => xDlClose(handle: *mut c_void) -> (), ();
    randomness => xRandomness(len: c_int, out: *mut c_char) -> c_int, 0;
    sleep => xSleep(micros: c_int) -> c_int, 0;
    current_time => xCurrentTime(out: *mut f64) -> c_int, ffi::SQLITE_ERROR;
    get_last_error => xGetLastError(len: c_int, out: *mut c_char) -> c_int, 0;
    current_time_int64 => xCurrentTimeInt64(out: *mut i64) -> c_int, ffi::SQLITE_ERROR;
    set_system_call => xSetSystemCall(name: *const c_char, call: ffi::sqlite3_syscall_ptr)
        -> c_int, ffi::SQLITE_NOTFOUND;
    get_system_call => xGetSystemCall(name: *const c_char) -> ffi::sqlite3_syscall_ptr, None;
    next_system_call => xNextSystemCall(name: *const c_char) -> *const c_char, std::ptr::null();
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags, params};
    use std::cell::Cell;

    thread_local! {
        /// Writes this thread made to WAL files through the VFS.
        static WRITES: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn count_write() {
        WRITES.with(|w| w.set(w.get() + 1));
    }

    fn writes() -> usize {
        WRITES.with(Cell::get)
    }

    fn open(path: &std::path::Path, vfs: Option<&str>) -> Connection {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match vfs {
            Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs).unwrap(),
            None => Connection::open_with_flags(path, flags).unwrap(),
        };
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn
    }

    /// Each row's id and its body's hash (a failure prints a few lines, not the bodies).
    fn rows(conn: &Connection) -> Vec<(i64, String)> {
        let mut stmt = conn.prepare("SELECT id, body FROM t ORDER BY id").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, Vec<u8>>(1)?)))
            .unwrap()
            .map(|row| row.map(|(id, body)| (id, digest(&body))))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn digest(body: &[u8]) -> String {
        blake3::hash(body).to_hex()[..16].to_owned()
    }

    /// A body that tells its row and round apart.
    fn body(id: i64, round: i64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (id * 31 + round * 7 + i as i64) as u8)
            .collect()
    }

    /// Commits through the VFS, small ones and one large enough to spill the cache (whose
    /// frames are then rewritten in place, with their checksums redone at the commit): after
    /// each, a connection of the default VFS reads exactly what was committed, and a copy of the
    /// database and its WAL, recovered from the WAL's frames alone as after a crash, holds it
    /// all and passes an integrity check.
    #[test]
    fn commits_through_the_vfs_read_back_and_recover_from_the_wal() {
        let name = name().expect("the VFS registers");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let writer = open(&path, Some(name));
        writer
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            .unwrap();
        let reader = open(&path, None);
        let mut expected: Vec<(i64, String)> = Vec::new();

        // Small commits: one write each, however many frames they hold.
        for id in 0..20 {
            let before = writes();
            let row = (id, body(id, 0, 300 + 500 * (id as usize % 9)));
            writer
                .execute(
                    "INSERT INTO t (id, body) VALUES (?1, ?2)",
                    params![row.0, row.1],
                )
                .unwrap();
            assert_eq!(writes() - before, 1, "commit {id} took one write");
            expected.push((row.0, digest(&row.1)));
            assert_eq!(rows(&reader), expected);
        }

        // A transaction larger than the cache: frames spill before the commit and the same
        // pages are written again, in place.
        writer.pragma_update(None, "cache_size", 10).unwrap();
        let tx = writer.unchecked_transaction().unwrap();
        for round in 1..4 {
            for id in 0..200 {
                let b = body(id, round, 3000);
                tx.execute(
                    "INSERT INTO t (id, body) VALUES (?1, ?2) \
                     ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    params![id, b],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
        expected = (0..200)
            .map(|id| (id, digest(&body(id, 3, 3000))))
            .collect();
        assert_eq!(rows(&reader), expected);

        // Copies of the files as they are now, the WAL never checkpointed: the copy recovers
        // every commit from the frames' headers and checksums.
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(
            dir.path().join("wal.db-wal"),
            dir.path().join("copy.db-wal"),
        )
        .unwrap();
        let recovered = open(&copy, None);
        assert_eq!(rows(&recovered), expected);
        let check: String = recovered
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}
