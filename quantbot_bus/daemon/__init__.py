"""The daemon: when to drive the :class:`~quantbot_bus.pipeline.Bus` (events, group commit,
timers, signals, systemd notify, ``state/status.json``).

One module per thread: :mod:`.observer` (watchdog → :mod:`.dirty`), :mod:`.worker` (group commit,
rescans, :mod:`.pending` runs), :mod:`.publisher` (exports), :mod:`.lookout` (alerts, the
dashboard), :mod:`.supervisor` (:class:`Daemon`,
start order, health, stop, signals); :mod:`.status` (the status file) and :mod:`.notify`
(``sd_notify``) serve them. The package itself imports nothing, so that reading the status file
does not load watchdog or the pipeline.
"""

#: Every thread of the daemon wakes at least this often (heartbeat, timers) even when idle.
IDLE_TICK_S = 1.0
