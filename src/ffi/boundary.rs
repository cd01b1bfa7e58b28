//! The panic boundary and argument checks shared by every export.

use super::status::{Fail, rd_status, set_last_error};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f` behind a panic boundary and turns its outcome into a status,
/// recording failures for `rd_last_error()` under `function`'s name.
pub(crate) fn guard(function: &str, f: impl FnOnce() -> Result<(), Fail>) -> rd_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => rd_status::RD_OK,
        Ok(Err(fail)) => {
            set_last_error(function, &fail.message);
            fail.status
        }
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            // The message is built outside the unwind: a second panic here
            // would abort, so keep it simple.
            set_last_error(function, &format!("internal error (panic): {msg}"));
            rd_status::RD_ERR_PANIC
        }
    }
}

/// Runs an infallible `f` behind a panic boundary; `fallback` on a panic.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "unknown panic payload"
    }
}

/// Checks that `p` is non-NULL and aligned for `T`.
pub(crate) fn check_ptr<T>(p: *const T, what: &str) -> Result<(), Fail> {
    if p.is_null() {
        return Err(Fail::null(what));
    }
    if !p.is_aligned() {
        return Err(Fail::invalid(format!("{what} is misaligned")));
    }
    Ok(())
}

/// A shared reference to `*p` after checking it is non-NULL and aligned.
///
/// # Safety
///
/// A non-NULL `p` must point to a valid `T` that stays valid and is not
/// mutated through other pointers (except through `T`'s interior mutability)
/// for `'a`.
pub(crate) unsafe fn arg_ref<'a, T>(p: *const T, what: &str) -> Result<&'a T, Fail> {
    check_ptr(p, what)?;
    // SAFETY: checked non-NULL and aligned; validity is the caller's contract.
    Ok(unsafe { &*p })
}

/// The slice `p[0..n]`; `n == 0` gives an empty slice whatever `p` is.
///
/// # Safety
///
/// When `n > 0` and `p` is non-NULL, `p` must point to `n` initialised values
/// of `T` that are not mutated for `'a`.
pub(crate) unsafe fn arg_slice<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T], Fail> {
    if n == 0 {
        return Ok(&[]);
    }
    check_ptr(p, what)?;
    if n.checked_mul(size_of::<T>())
        .is_none_or(|bytes| bytes > isize::MAX as usize)
    {
        return Err(Fail::invalid(format!("{what}: length {n} is too large")));
    }
    // SAFETY: non-NULL, aligned, size within isize::MAX; validity of the
    // n elements is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A `#[repr(C)]` struct of the ABI whose first field is `size_t struct_size`.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]`, start with a `usize` field holding the
/// struct's size, and consist only of fields for which every byte pattern a C
/// caller can legitimately produce for the declared C type is valid.
pub(crate) unsafe trait Versioned: Copy {
    /// The C type's name, for messages.
    const NAME: &'static str;
    /// The sizes of the struct in earlier releases, oldest first (empty for
    /// a struct unchanged since it appeared); `size_of::<Self>()` is always
    /// accepted too. A field added in a release must start at or after the
    /// previous release's size (never in its tail padding, which a caller's
    /// struct holds as garbage).
    const RELEASED_SIZES: &'static [usize];
    /// Whether the library writes the struct (an output the caller only sizes)
    /// rather than reads it: only the error message differs.
    const OUTPUT: bool = false;
    /// The value fields take when the caller's struct is older (shorter).
    fn defaults() -> Self;
}

/// Checks the `struct_size` of the struct at `p` and returns it.
///
/// # Safety
///
/// A non-NULL, aligned `p` must point to at least `size_of::<usize>()`
/// readable bytes.
unsafe fn checked_size<T: Versioned>(p: *const T, what: &str) -> Result<usize, Fail> {
    check_ptr(p, what)?;
    // SAFETY: aligned for T, hence for its first field (a usize); readable by
    // the caller's contract.
    let size = unsafe { p.cast::<usize>().read() };
    // Only the sizes of released versions: a size in between would make the
    // library read a field the caller's struct only partly holds.
    if size != size_of::<T>() && !T::RELEASED_SIZES.contains(&size) {
        let mut accepted = String::new();
        for (i, n) in T::RELEASED_SIZES.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            accepted.push_str(&format!("{sep}{n}"));
        }
        if !accepted.is_empty() {
            accepted.push_str(" (earlier releases) or ");
        }
        accepted.push_str(&size_of::<T>().to_string());
        let how = if T::OUTPUT {
            format!("set struct_size = sizeof({}) before the call", T::NAME)
        } else {
            format!(
                "initialise the struct with its rd_*_default_params() function or \
                 set struct_size = sizeof({})",
                T::NAME
            )
        };
        return Err(Fail::invalid(format!(
            "{what}->struct_size is {size}; this library accepts {accepted} for {} ({how})",
            T::NAME
        )));
    }
    Ok(size)
}

/// Reads a versioned input struct: the caller's first `struct_size` bytes over
/// the library's defaults.
///
/// # Safety
///
/// A non-NULL `p` must point to a readable struct of `struct_size` bytes (as
/// declared in its first field) that is not mutated during the call.
pub(crate) unsafe fn read_struct<T: Versioned>(p: *const T, what: &str) -> Result<T, Fail> {
    // SAFETY: forwarded contract.
    let size = unsafe { checked_size(p, what)? };
    let mut out = T::defaults();
    // SAFETY: `size <= size_of::<T>()` bytes are readable at `p` (contract) and
    // writable in `out`; the regions do not overlap; the bytes are fields of a
    // C struct of the same layout (trait contract).
    unsafe {
        std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&raw mut out).cast::<u8>(), size);
    }
    Ok(out)
}

/// A checked destination for a versioned output struct.
pub(crate) struct OutStruct<T> {
    ptr: *mut T,
    size: usize,
}

impl<T: Versioned> OutStruct<T> {
    /// Checks `p` and its `struct_size` (set by the caller) without writing.
    ///
    /// # Safety
    ///
    /// A non-NULL `p` must point to a writable struct of `struct_size` bytes
    /// that stays valid until [`OutStruct::write`] is called.
    pub(crate) unsafe fn new(p: *mut T, what: &str) -> Result<OutStruct<T>, Fail> {
        // SAFETY: forwarded contract.
        let size = unsafe { checked_size(p, what)? };
        Ok(OutStruct { ptr: p, size })
    }

    /// Writes the first `struct_size` bytes of `value` (keeping the caller's
    /// `struct_size`).
    pub(crate) fn write(self, value: T) {
        let mut value = value;
        // SAFETY: T starts with a usize field (trait contract).
        unsafe { (&raw mut value).cast::<usize>().write(self.size) };
        // SAFETY: `self.size <= size_of::<T>()` bytes are writable at `ptr`
        // (checked in `new`, validity is the contract of `new`).
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const value).cast::<u8>(),
                self.ptr.cast::<u8>(),
                self.size,
            );
        }
    }
}

/// A checked destination for one plain value.
pub(crate) struct Out<T> {
    ptr: *mut T,
}

impl<T> Out<T> {
    /// Checks `p` (non-NULL, aligned) without writing.
    ///
    /// # Safety
    ///
    /// A non-NULL `p` must be valid for writes of `T` until [`Out::write`].
    pub(crate) unsafe fn new(p: *mut T, what: &str) -> Result<Out<T>, Fail> {
        check_ptr(p, what)?;
        Ok(Out { ptr: p })
    }

    /// Writes `value` (without dropping the old contents).
    pub(crate) fn write(self, value: T) {
        // SAFETY: checked non-NULL and aligned in `new`; writable by its contract.
        unsafe { self.ptr.write(value) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_a_status_and_a_message() {
        let s = guard("rd_test", || panic!("boom"));
        assert_eq!(s, rd_status::RD_ERR_PANIC);
        // SAFETY: rd_last_error returns a valid NUL-terminated string.
        let msg = unsafe { std::ffi::CStr::from_ptr(super::super::status::rd_last_error()) };
        assert!(msg.to_str().unwrap().contains("boom"), "{msg:?}");
        assert_eq!(guard_value(7, || panic!("x")), 7);
    }

    #[test]
    fn slices_check_null_and_length() {
        // SAFETY: n == 0 never dereferences.
        assert!(unsafe { arg_slice::<u32>(std::ptr::null(), 0, "p") }.is_ok());
        // SAFETY: NULL is rejected before any dereference.
        let e = unsafe { arg_slice::<u32>(std::ptr::null(), 3, "p") }.unwrap_err();
        assert_eq!(e.status, rd_status::RD_ERR_INVALID_ARGUMENT);
        let x = [0u32; 2];
        // SAFETY: the length is rejected before any dereference.
        let e = unsafe { arg_slice(x.as_ptr(), usize::MAX / 2, "p") }.unwrap_err();
        assert!(e.message.contains("too large"));
        let bytes = [0u8; 16];
        let mis = bytes.as_ptr().wrapping_add(1).cast::<u32>();
        // SAFETY: misalignment is rejected before any dereference.
        let e = unsafe { arg_slice(mis, 1, "p") }.unwrap_err();
        assert!(e.message.contains("misaligned"));
    }
}
