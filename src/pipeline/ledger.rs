//! Per-partition bookkeeping of pending deliveries: acknowledged heads
//! popped in order (their offsets become committable), failed ones sent
//! again in place, a partition forgotten or rewound.

use super::*;

impl Core {
    /// Pops every acknowledged head of every partition queue, and sends
    /// failed deliveries again (they keep their place, holding back the
    /// offsets behind them). Returns the partitions whose done offset moved.
    pub(super) fn drain(&mut self, producer: &RenewableProducer) -> Vec<(i32, i64)> {
        let mut moved = Vec::new();
        let mut retried = 0u64;
        for (p, queue) in self.pending.iter_mut() {
            let mut last = None;
            let mut failing = false;
            while let Some(front) = queue.front_mut() {
                let ack = match front.delivery.as_mut() {
                    None => Ack::Done,
                    Some(d) => poll_delivery(d),
                };
                match ack {
                    Ack::Done => {
                        if front.delivery.is_some() {
                            self.in_flight -= 1;
                        }
                        last = Some(front.offset);
                        queue.pop_front();
                    }
                    Ack::Failed(msg, too_big) => {
                        front.delivery = Some(send_again(producer, msg, too_big));
                        retried += 1;
                        failing = true;
                        break;
                    }
                    Ack::NotYet => break,
                }
            }
            // Failures come in bursts (a broker gone, a producer renewed):
            // send the rest again now rather than one per turn.
            if failing {
                for entry in queue.iter_mut().skip(1) {
                    let Some(d) = entry.delivery.as_mut() else {
                        continue;
                    };
                    match poll_delivery(d) {
                        Ack::Failed(msg, too_big) => {
                            entry.delivery = Some(send_again(producer, msg, too_big));
                            retried += 1;
                        }
                        Ack::Done => {
                            entry.delivery = None;
                            self.in_flight -= 1;
                        }
                        Ack::NotYet => {}
                    }
                }
            }
            if let Some(off) = last {
                self.done.insert(*p, off + 1);
                moved.push((*p, off + 1));
            }
        }
        if retried > 0 {
            metrics::counter!(m::DELIVERY_RETRIES_TOTAL).increment(retried);
            tracing::warn!(count = retried, "deliveries failed; sending them again");
        }
        moved
    }
}
