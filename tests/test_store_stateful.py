"""Stateful property test: random store operations against a plain dict model.

Invariants after every step: contents read back equal the model, budgets are
never exceeded, pinned copies are never evicted, and a StoreBudgetError is
raised only when pinned, fetched and home copies really leave no room.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tiermem.buffers import round_up
from tiermem.store import (
    StoreBudgetError,
    StoreConfig,
    StoreError,
    TensorStore,
    TierKind,
)

# random fetches diverge from recorded schedules all the time: that is tested elsewhere
pytestmark = pytest.mark.filterwarnings("ignore::tiermem.store.StoreScheduleWarning")

H, D, N = TierKind.HOST, TierKind.DEVICE, TierKind.NVME
NAMES = [f"t{i}" for i in range(6)]
BUDGET = {H: 448 << 10, D: 320 << 10}
names = st.sampled_from(NAMES)
mem_tiers = st.sampled_from([H, D])


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tiermem-hyp-"))
        self.store = TensorStore(
            StoreConfig(
                device_bytes=BUDGET[D],
                host_bytes=BUDGET[H],
                nvme_paths=(self.dir / "a", self.dir / "b"),
                stripe_unit=64 << 10,
                prefetch_bytes=256 << 10,
            )
        )
        self.model: dict[str, torch.Tensor] = {}
        self.held: list[tuple[str, TierKind]] = []
        self.pins: Counter = Counter()
        self.was_resident: set[tuple[str, TierKind]] = set()
        self.in_pass = False
        self.counter = 0

    def teardown(self) -> None:
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- helpers ----
    def footprint(self, name: str) -> int:
        t = self.model[name]
        return round_up(max(t.numel() * t.element_size(), 1))

    def check_budget_error(self, err: StoreBudgetError, need_name: str) -> None:
        # a nested error (demoting a dirty device copy needs host room) names
        # the tier and tensor that did not fit last
        msg = str(err).split("; ")[-1]
        tier = H if "HOST tier" in msg else D
        m = re.search(r"tier cannot fit \d+ bytes for tensor '(\w+)'", msg)
        assert m, msg
        need_name = m.group(1)
        fixed = 0
        for name in self.model:
            info = self.store.info(name)
            if info["states"][tier].value == "absent":
                continue
            if (
                info["home"] is tier
                or self.pins[(name, tier)]
                or (name, tier) in self.held
                or (tier is H and (name, D) in self.held and info["states"][D].value == "loading")
            ):
                fixed += self.footprint(name)
        assert fixed + self.footprint(need_name) > BUDGET[tier], (msg, fixed)

    # ---- rules ----
    @initialize(
        specs=st.lists(
            st.tuples(
                st.sampled_from([999, 20_000, 65_536]),
                st.sampled_from([torch.float32, torch.float32, torch.bfloat16, torch.float16]),
                st.sampled_from([N, N, N, N, H, D]),
            ),
            min_size=3,
            max_size=6,
        )
    )
    def populate(self, specs):
        for name, (numel, dtype, home) in zip(NAMES, specs, strict=False):
            self.register(name, numel, dtype, home)

    @rule(
        name=names,
        numel=st.sampled_from([1, 999, 20_000, 65_536]),
        dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
        home=st.sampled_from([N, N, N, H, D]),
    )
    def register(self, name, numel, dtype, home):
        if name in self.model:
            return
        self.counter += 1
        init = (torch.arange(numel) % 251 + self.counter).to(dtype)
        try:
            self.store.register(name, numel, dtype, home=home, init=init)
        except StoreBudgetError:
            assert name not in self.store.names()
            return
        self.model[name] = init

    @rule(name=names, tier=mem_tiers)
    def fetch(self, name, tier):
        if name not in self.model:
            return
        try:
            t = self.store.fetch(name, tier).wait()
        except StoreBudgetError as err:
            self.check_budget_error(err, name)
            return
        assert torch.equal(t.cpu(), self.model[name]), name
        self.held.append((name, tier))

    @precondition(lambda self: self.held)
    @rule(data=st.data(), dirty=st.booleans())
    def release(self, data, dirty):
        name, tier = data.draw(st.sampled_from(self.held))
        if dirty:
            self.counter += 1
            view = self.store.fetch(name, tier).wait()  # another ref to the same copy
            self.store.release(name, tier=tier)
            view.add_(1)
            self.model[name] = self.model[name] + 1
        self.store.release(name, dirty=dirty, tier=tier)
        self.held.remove((name, tier))

    @rule(name=names, tier=mem_tiers, load=st.booleans())
    def pin(self, name, tier, load):
        if name not in self.model:
            return
        self.store.pin(name, tier)
        self.pins[(name, tier)] += 1
        if load:  # make it resident now
            self.fetch(name, tier)
            if self.held and self.held[-1] == (name, tier):
                self.store.release(name, tier=tier)
                self.held.pop()

    @rule(tier=mem_tiers)
    def scheduled_pass(self, tier):
        """Fetch every tensor in name order: the first such pass records, the
        next ones replay with prefetch and next-use eviction."""
        if self.in_pass:
            self.store.end_pass()
        self.store.begin_pass()
        for name in sorted(self.model):
            self.fetch(name, tier)
            if self.held and self.held[-1] == (name, tier):
                self.store.release(name, tier=tier)
                self.held.pop()
        self.store.end_pass()
        self.in_pass = False

    @rule(name=names, tier=mem_tiers)
    def unpin(self, name, tier):
        if self.pins[(name, tier)]:
            self.store.unpin(name, tier)
            self.pins[(name, tier)] -= 1
            if not self.pins[(name, tier)]:
                self.was_resident.discard((name, tier))

    @rule(name=st.one_of(st.none(), names))
    def write_back(self, name):
        if name is not None and name not in self.model:
            return
        try:
            self.store.write_back(name)
        except StoreBudgetError as err:  # staging a device copy needs host room
            assert "HOST" in str(err)

    @rule(name=names)
    def drop(self, name):
        if name not in self.model:
            return
        if any(n == name for n, _ in self.held):
            try:
                self.store.drop(name)
            except StoreError as err:
                assert "fetched and not released" in str(err)
                return
            raise AssertionError("dropped a fetched tensor")
        self.store.drop(name)
        del self.model[name]
        for t in (H, D):
            self.pins.pop((name, t), None)
            self.was_resident.discard((name, t))

    @rule()
    def toggle_pass(self):
        if self.in_pass:
            self.store.end_pass()
        else:
            self.store.begin_pass()
        self.in_pass = not self.in_pass

    # ---- invariants ----
    @invariant()
    def budgets_hold(self):
        for tier in (H, D):
            t = self.store.tier(tier)
            assert t.used <= t.budget and t.peak <= t.budget

    @invariant()
    def pinned_copies_are_never_evicted(self):
        for (name, tier), n in self.pins.items():
            if not n or name not in self.model:
                continue
            valid = self.store.info(name)["states"][tier].valid
            if (name, tier) in self.was_resident:
                assert valid, f"pinned {name} evicted from {tier.name}"
            elif valid:
                self.was_resident.add((name, tier))

    @invariant()
    def held_copies_are_valid(self):
        for name, tier in self.held:
            assert self.store.info(name)["states"][tier].valid

    @invariant()
    def registered_names_match(self):
        assert sorted(self.store.names()) == sorted(self.model)


StoreMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreStateful = StoreMachine.TestCase
