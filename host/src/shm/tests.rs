//! Segments made here, handed to this process's own registry over its
//! socket, as two hosts on one machine do.

use std::time::{Duration, Instant};

use super::*;

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn mappings_check_their_bounds() {
    let m = Mapping::create("weft-shm-test", 4096).unwrap();
    m.write(4000, &[7; 96]).unwrap();
    assert_eq!(m.read(4000, 96, |b| b.to_vec()).unwrap(), vec![7; 96]);
    assert!(m.write(4001, &[0; 96]).unwrap_err().contains("outside the 4096-byte segment"));
    assert!(m.read(u64::MAX, 2, |_| ()).is_err());
    assert!(Mapping::create("weft-shm-test", 0).is_err());
}

#[test]
fn a_leased_segment_is_shared_with_the_registry_and_unmapped_when_dropped() {
    let registry = registry().expect("shared memory here");
    let pool = Pool::new(registry.address());
    let lease = pool.lease(3 << 20).expect("a segment");
    assert!(lease.mapping().len() >= 3 << 20);
    let host_side = registry.segment(lease.key()).expect("registered");
    // What one side writes, the other reads: the same memory.
    lease.mapping().write(123, b"from the master").unwrap();
    assert_eq!(host_side.read(123, 15, |b| b.to_vec()).unwrap(), b"from the master");
    host_side.write(1 << 20, b"from the task").unwrap();
    assert_eq!(lease.mapping().read(1 << 20, 13, |b| b.to_vec()).unwrap(), b"from the task");
    // Given back after its call completed and leased again: the same
    // segment, not a new one.
    let key = *lease.key();
    lease.completed();
    drop(lease);
    let again = pool.lease(1 << 20).expect("a segment");
    assert_eq!(*again.key(), key);
    assert_eq!(pool.segments(), 1);
    // Dropped without completing (a cancelled call, whose host may still
    // write to it): closed, never reused.
    drop(again);
    assert_eq!(pool.segments(), 0);
    wait_until("the registry dropped the abandoned segment", || registry.segment(&key).is_none());
    assert_ne!(pool.lease(1 << 20).map(|l| *l.key()), Some(key));
    drop(host_side);
    drop(pool);
    wait_until("the registry dropped the segment", || registry.segment(&key).is_none());
}

#[test]
fn a_pool_holds_a_bounded_number_of_segments() {
    let registry = registry().expect("shared memory here");
    let pool = Pool::new(registry.address());
    let leases: Vec<_> = (0..pool::MAX_SEGMENTS_PER_PEER).map(|_| pool.lease(1024).expect("a segment")).collect();
    assert!(pool.lease(1024).is_none(), "one more than the cap");
    assert!(pool.lease(MAX_SEGMENT_BYTES + 1).is_none());
    leases.iter().for_each(Lease::completed);
    drop(leases);
    assert!(pool.lease(1024).is_some());
}

#[test]
fn unsealed_or_short_memfds_and_unreachable_hosts_are_refused() {
    use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
    let unsealed = memfd_create("weft-shm-test", MemfdFlags::CLOEXEC).unwrap();
    ftruncate(&unsealed, 4096).unwrap();
    assert!(Mapping::open(unsealed, 4096).unwrap_err().contains("not sealed against shrinking"));
    let sealed = Mapping::create("weft-shm-test", 4096).unwrap();
    assert!(Mapping::open(sealed.fd().unwrap().try_clone().unwrap(), 4096).is_ok(), "a sealed tmpfs memfd maps");
    let file = std::os::fd::OwnedFd::from(std::fs::File::open("/proc/self/exe").unwrap());
    assert!(Mapping::open(file, 4096).unwrap_err().contains("not a sealable memfd"));
    let short = Mapping::create("weft-shm-test", 4096).unwrap();
    let fd = short.fd().unwrap().try_clone().unwrap();
    assert!(Mapping::open(fd, 8192).unwrap_err().contains("not the 8192 announced"));
    // A socket nobody listens on: the pool gives up and calls use TCP.
    let nowhere = Pool::new("weft-shm-nobody-listens-here");
    assert!(nowhere.lease(1 << 20).is_none());
    assert!(nowhere.lease(1 << 20).is_none());
    assert_eq!(nowhere.segments(), 0);
}

/// Sends a raw registration (`hello`, with `fd` attached if any) to this
/// process's registry and returns its answer.
fn register_raw(hello: &[u8], fd: Option<&std::os::fd::OwnedFd>) -> Vec<u8> {
    use std::io::{IoSlice, Read};
    use std::mem::MaybeUninit;
    use std::os::fd::AsFd;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixStream};

    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let address = registry().expect("shared memory here").address();
    let conn = UnixStream::connect_addr(&SocketAddr::from_abstract_name(address.as_bytes()).unwrap()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd.as_fd()];
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    rustix::net::sendmsg(&conn, &[IoSlice::new(hello)], &mut control, SendFlags::NOSIGNAL).unwrap();
    rustix::net::shutdown(&conn, rustix::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    (&conn).read_to_end(&mut reply).unwrap();
    reply
}

#[test]
fn the_registry_refuses_bad_registrations_and_holds_nothing_for_them() {
    use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
    let registry = registry().expect("shared memory here");
    let mut hello = [0u8; 24];
    hello[..16].copy_from_slice(&rand::random::<Key>());
    hello[16..].copy_from_slice(&4096u64.to_le_bytes());
    let refused = |reply: Vec<u8>| {
        assert_eq!(reply.first(), Some(&1), "refused");
        String::from_utf8_lossy(&reply[1..]).to_string()
    };
    let unsealed = memfd_create("weft-shm-test", MemfdFlags::CLOEXEC).unwrap();
    ftruncate(&unsealed, 4096).unwrap();
    let why = refused(register_raw(&hello, Some(&unsealed)));
    assert!(why.contains("not sealed against shrinking"), "{why}");
    let why = refused(register_raw(&hello, None));
    assert!(why.contains("carries one memfd, got 0"), "{why}");
    let why = refused(register_raw(&hello[..10], None));
    assert!(why.contains("registration is 24 bytes, got 10"), "{why}");
    let sealed = Mapping::create("weft-shm-test", 4096).unwrap();
    let mut huge = hello;
    huge[16..].copy_from_slice(&u64::MAX.to_le_bytes());
    let why = refused(register_raw(&huge, sealed.fd()));
    assert!(why.contains("a segment has 1 to"), "{why}");
    assert!(registry.segment(&hello[..16]).is_none());
    // A good one is accepted, and dropped when its connection closes (here
    // at once: the sender shut its side).
    assert_eq!(register_raw(&hello, sealed.fd()), vec![0]);
    wait_until("the closed segment is gone", || registry.segment(&hello[..16]).is_none());
}

#[test]
fn a_tensor_read_in_place_keeps_its_segment_from_the_pool_until_it_is_dropped() {
    use std::sync::Arc;

    use crate::tensor::{DType, MappedTensor, SharedMemory, Tensor};
    let registry = registry().expect("shared memory here");
    let pool = Pool::new(registry.address());
    let lease = Arc::new(pool.lease(1 << 20).expect("a segment"));
    let key = *lease.key();
    lease.mapping().write(4096, bytemuck::cast_slice(&[2.5f32; 1024])).unwrap();
    let memory: Arc<dyn SharedMemory> = lease.clone();
    let t = Tensor::Mapped(MappedTensor::new(DType::F32, vec![1024], memory, 4096).unwrap().expect("mapped"));
    lease.completed();
    drop(lease);
    // The call is over, but its output still lies in the segment: no other
    // call may lease it and write there.
    assert!(pool.lease_free(1).is_none());
    assert_eq!(pool.segments(), 1);
    assert_eq!(t.as_f32_vec().unwrap(), vec![2.5; 1024]);
    drop(t);
    assert_eq!(pool.lease_free(1).map(|l| *l.key()), Some(key), "back in the pool once the tensor is gone");
}

#[test]
fn a_lent_segment_is_reused_only_once_its_loan_ends() {
    let registry = registry().expect("shared memory here");
    let pool = Pool::new(registry.address());
    let lease = pool.lease(1 << 20).expect("a segment");
    let key = *lease.key();
    lease.mapping().write(0, b"delivered").unwrap();
    // The host takes a loan of it, then its master hears the call went through.
    let loan = registry.borrow(&key).expect("registered");
    assert!(registry.borrow(&key).is_none(), "one loan at a time");
    lease.lent();
    drop(lease);
    assert_eq!((pool.lent(), pool.segments()), (1, 1));
    let other = pool.lease(1 << 20).expect("a second segment");
    assert_ne!(*other.key(), key, "not the lent one, while the loan lasts");
    other.completed();
    drop(other);
    assert_eq!(loan.mapping().read(0, 9, |b| b.to_vec()).unwrap(), b"delivered");
    drop(loan);
    // Once the host says so, the segment is free again.
    wait_until("the ended loan freed the segment", || pool.lent() == 0);
    let free: Vec<Lease> = std::iter::from_fn(|| pool.lease_free(1 << 20)).take(2).collect();
    assert!(free.iter().any(|l| *l.key() == key), "the lent segment is free again");
    assert_eq!(pool.segments(), 2);
}

#[test]
fn a_lent_segment_whose_host_dropped_it_is_closed_not_reused() {
    let registry = registry().expect("shared memory here");
    let pool = Pool::new(registry.address());
    let lease = pool.lease(1 << 20).expect("a segment");
    let key = *lease.key();
    lease.lent();
    drop(lease);
    // The host says something other than that the loan ended: the pool
    // trusts the segment no more.
    let (_, conn, _) = registry.lock().get(&key).cloned().expect("registered");
    std::io::Write::write_all(&mut &*conn, &[0x01]).unwrap();
    wait_until("the pool closed the segment", || pool.segments() == 0);
    assert_eq!(pool.lent(), 0);
    wait_until("the registry dropped it", || registry.segment(&key).is_none());
}
