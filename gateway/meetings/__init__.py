"""Panel meetings: the calendar, agendas and their packs, the notice, the record of each
meeting, and the Board's decisions on the panel's outcomes (docs/meetings.md)."""
