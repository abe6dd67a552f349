//! The RTP port range: hands out even RTP ports (RTCP on the next odd one) and takes them
//! back. Pure bookkeeping; the shell binds the sockets and skips ports someone else holds.

use std::collections::HashSet;

#[derive(Debug)]
pub struct PortPool {
    min: u16,
    max: u16,
    next: u16,
    in_use: HashSet<u16>,
}

impl PortPool {
    pub fn new(min: u16, max: u16) -> PortPool {
        let min = min + (min % 2);
        PortPool {
            min,
            max,
            next: min,
            in_use: HashSet::new(),
        }
    }

    /// Candidate RTP ports in round-robin order, so a port just freed is not reused at once
    /// (late packets of the old call would land in the new one).
    pub fn candidates(&self) -> impl Iterator<Item = u16> + '_ {
        let span = (self.max.saturating_sub(self.min) + 1).div_ceil(2).max(1);
        (0..span)
            .map(move |i| {
                let offset =
                    (u32::from(self.next - self.min) + 2 * u32::from(i)) % (2 * u32::from(span));
                self.min + offset as u16
            })
            .filter(move |p| *p < self.max && !self.in_use.contains(p))
    }

    pub fn take(&mut self, port: u16) {
        self.in_use.insert(port);
        self.next = if port + 2 >= self.max {
            self.min
        } else {
            port + 2
        };
    }

    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_even_ports_round_robin_without_reuse() {
        let mut pool = PortPool::new(20000, 20009);
        let mut got = Vec::new();
        loop {
            let Some(p) = pool.candidates().next() else {
                break;
            };
            pool.take(p);
            got.push(p);
        }
        assert_eq!(got, vec![20000, 20002, 20004, 20006, 20008]);
        pool.release(20002);
        assert_eq!(pool.candidates().next(), Some(20002));
        pool.release(20006);
        pool.take(20002);
        assert_eq!(pool.candidates().next(), Some(20006));
    }
}
