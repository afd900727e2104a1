"""The client's transfer rate: what -l/-m/--policy asked, what the manager's RATE changes, what the peer caps.

The client proposes (in hello, and with each RATE command as a numbered ``rate`` message); the peer answers
with its caps applied, and only the answer to our latest proposal counts. With --auto-detect-capacity the
target is a percent of the capacity the sending side measures, under the engine's own ceiling.
"""

from __future__ import annotations

from fasp.datapath.rate import CEILING_KBPS, RateSettings
from fasp.options.flags import Config
from fasp.options.vocabulary import POLICIES
from faspmanager import mgmt


class ClientRate:
    def __init__(self, cfg: Config) -> None:
        self.settings = (
            RateSettings(CEILING_KBPS, cfg.min_kbps, cfg.policy, percent=cfg.target_kbps)
            if cfg.auto_capacity
            else RateSettings(cfg.target_kbps, cfg.min_kbps, cfg.policy, start_at_target=cfg.target_set)
        )
        self.seq = 0  # our latest proposal's number
        self.capacity_kbps: int | None = None  # measured by the sending side (the peer's, in a download)

    def command(self, frame: mgmt.Frame) -> RateSettings:
        """RATE: kbit/s; in an --auto-detect-capacity session Rate is a percent like -l (above 100 means
        100, so a manager that thinks in kbit/s gets all of the capacity), MinRate stays kbit/s. An invalid
        one is a ValueError (MgmtProtocolError for a non-integer) and changes nothing."""
        rate = self.settings
        target = frame.int("Rate", rate.percent or rate.target_kbps)
        minimum = frame.int("MinRate", rate.min_kbps)
        policy = (frame.get("Policy") or rate.policy).lower()
        if policy not in POLICIES or target is None or minimum is None or target <= 0 or minimum < 0:
            raise ValueError(f"invalid RATE command: {frame.fields}")
        if rate.percent:
            self.settings = RateSettings(rate.target_kbps, minimum, policy, percent=min(target, 100))
        else:
            self.settings = RateSettings(target, min(minimum, target), policy, start_at_target=True)
        return self.settings

    def target_kbps(self, stats: dict) -> int:
        """STATS TargetRate: -l, or with --auto-detect-capacity its percent of the capacity once measured
        (the ceiling until then)."""
        rate = self.settings
        capacity = stats.get("capacity_kbps") or self.capacity_kbps
        if not rate.percent or capacity is None:
            return rate.target_kbps
        return min(rate.target_kbps, max(capacity * rate.percent // 100, rate.min_kbps))
