//! The hot path allocates nothing: seal, open and the batch calls run under an allocator that
//! counts, per thread, every allocation made while a packet is processed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vgw_esp::{
    Encryption, InboundSa, InboundSaTable, Integrity, Lifetime, MAX_HEADROOM, MAX_TAILROOM,
    OutboundSa, PacketSlot, SaParams, Spi, Suite,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn seal_and_open_do_not_allocate() {
    // The counter itself works.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 10]))) > 0);
    let suites = [
        Suite::AES_GCM_256,
        Suite::CHACHA20_POLY1305,
        Suite::new(Encryption::AesCbc256, Some(Integrity::HmacSha512)).unwrap(),
        Suite::new(Encryption::AesCbc128, Some(Integrity::HmacSha1)).unwrap(),
    ];
    for suite in suites {
        let params = SaParams {
            spi: Spi(0x2000),
            suite,
            esn: true,
            lifetime: Lifetime::default(),
        };
        let keymat = vec![1u8; suite.keymat_len()];
        let mut out = OutboundSa::new(params, &keymat).unwrap();
        let mut table = InboundSaTable::new();
        table.insert(InboundSa::new(params, &keymat).unwrap());

        let len = 1000;
        let mut bufs = vec![vec![0u8; MAX_HEADROOM + len + MAX_TAILROOM]; 8];
        for b in &mut bufs {
            b[MAX_HEADROOM] = 0x45;
        }
        let mut slots: Vec<PacketSlot<'_>> = bufs
            .iter_mut()
            .map(|b| PacketSlot::new(b, MAX_HEADROOM..MAX_HEADROOM + len))
            .collect();

        let n = allocations_during(|| {
            let s = out.seal_batch(&mut slots);
            assert_eq!(s.failed, 0);
            let s = table.open_batch(&mut slots);
            assert_eq!(s.failed, 0);
        });
        assert_eq!(n, 0, "{suite:?} allocated {n} times for 8 packets");

        // A single packet the same way, and a rejected replay.
        let mut one = vec![0u8; MAX_HEADROOM + 60 + MAX_TAILROOM];
        one[MAX_HEADROOM] = 0x45;
        let mut copy = vec![0u8; one.len()];
        let n = allocations_during(|| {
            let r = out
                .seal_in_place(&mut one, MAX_HEADROOM..MAX_HEADROOM + 60)
                .unwrap();
            let pkt_len = r.len();
            copy[..pkt_len].copy_from_slice(&one[r.clone()]);
            table.open_in_place(&mut one[r]).unwrap();
            assert!(table.open_in_place(&mut copy[..pkt_len]).is_err());
        });
        assert_eq!(n, 0, "{suite:?}");
    }
}
