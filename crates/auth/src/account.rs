//! Who a uid is on this host: its account name, primary group and
//! supplementary groups, from the system's user database (NSS: files, LDAP,
//! SSSD alike).
//!
//! A request proves only its uid and gid (the kernel read them). Everything
//! else a job runs with — the user name it is labelled and accounted under,
//! the groups its processes get — comes from here, never from the request:
//! a user who could name the groups could name `shadow` or `disk`.

use std::ffi::{CStr, CString};

/// An account as the user database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub name: String,
    /// The primary group (passwd's fourth field).
    pub gid: u32,
    /// Every group the account belongs to, the primary one included.
    pub groups: Vec<u32>,
}

impl Account {
    /// The account of `uid`, or `None` when the database has none.
    pub fn of_uid(uid: u32) -> Option<Account> {
        let (name, gid) = passwd_entry(uid)?;
        let groups = group_list(&name, gid);
        Some(Account { uid, name, gid, groups })
    }

    /// Whether a job of this account may run with primary group `gid`: its
    /// own primary group or one it belongs to, as `newgrp`/`sg` allow
    /// without a password.
    pub fn may_use_group(&self, gid: u32) -> bool {
        gid == self.gid || self.groups.contains(&gid)
    }
}

/// `getpwuid_r`: the name and primary gid of `uid`.
fn passwd_entry(uid: u32) -> Option<(String, u32)> {
    let mut size = 1024usize;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: passwd is plain data; zeroed is a valid value to be filled.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is to memory we own, with its true size.
        let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
        if r == libc::ERANGE && size < (1 << 20) {
            size *= 4;
            continue;
        }
        if r != 0 || found.is_null() || pw.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points to a NUL-terminated string in buf.
        let name = unsafe { CStr::from_ptr(pw.pw_name) }.to_str().ok()?.to_string();
        return Some((name, pw.pw_gid));
    }
}

/// `getgrouplist`: the groups of `user`, `gid` first.
pub fn group_list(user: &str, gid: u32) -> Vec<u32> {
    let Ok(name) = CString::new(user) else { return vec![gid] };
    let mut n: libc::c_int = 64;
    loop {
        let mut buf = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: buf holds `count` entries; getgrouplist writes at most that.
        let r = unsafe { libc::getgrouplist(name.as_ptr(), gid, buf.as_mut_ptr(), &mut count) };
        if r >= 0 {
            buf.truncate(count as usize);
            return buf;
        }
        if count <= n || n > 65536 {
            return vec![gid];
        }
        n = count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_root_and_in_its_own_group() {
        let root = Account::of_uid(0).expect("every host has root");
        assert_eq!(root.name, "root");
        assert_eq!(root.gid, 0);
        assert!(root.may_use_group(0));
    }

    #[test]
    fn an_unknown_uid_has_no_account() {
        assert_eq!(Account::of_uid(3_999_999_999), None);
    }
}
