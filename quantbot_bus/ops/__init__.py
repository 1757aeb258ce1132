"""Running a bus on a host: :mod:`.doctor` checks what breaks a long-running bus and says how to
fix it; :mod:`.systemd` renders, installs and removes its systemd units."""
