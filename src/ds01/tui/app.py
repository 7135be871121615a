"""The live dashboard: a textual app that shows ``ds01.tui.frame`` frames.

``DashboardApp`` takes its data source as a function that returns an overview (the JSON of
``GET /v1/overview``; ``ds01.tui.main.fetcher`` asks ds01d), so tests feed it known data.
Every ``interval`` seconds, and on ``r``, the function runs in a background thread: the
screen never waits for the daemon, and a refresh is skipped while the last one is still out.
A failure (ds01d down, an error answer) is shown in the status line, with the last good
data left on screen, and the next refresh tries again.

Keys: ``s`` cycles the containers' sort column, ``u`` asks for a user to filter by (empty:
everyone), ``enter`` or ``d`` shows the highlighted container's details, ``r`` refreshes
now, ``q`` quits.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, Static

from ds01.tui.frame import Frame, Table, View, build_frame, container_detail, usage_bar

Fetch = Callable[[], Mapping[str, Any]]

#: The frame's tables and the ids of the widgets that show them.
TABLE_IDS = ("devices", "containers", "queue", "users", "reservations")
#: Columns a DataTable adds to each column's cells (one each side), and its border adds.
CELL_PADDING = 2
BORDER = 2


def _table_width(table: Table) -> int:
    """The columns of a DataTable showing ``table`` whole: cells, their padding (one column
    each side) and the border."""
    return sum(_widths(table)) + CELL_PADDING * len(table.columns) + BORDER


def _widths(table: Table) -> list[int]:
    """The width of each column of ``table``: its widest cell or header, in characters."""
    widths = [len(c) for c in table.columns]
    for row in table.rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row.cells, strict=True)]
    return widths


class UserFilterScreen(ModalScreen[str | None]):
    """Asks for a user name; answers it (``""``: everyone), or ``None`` on escape."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    UserFilterScreen { align: center middle; }
    UserFilterScreen > Vertical {
        width: 60; height: auto; border: round $accent; background: $surface; padding: 1 2;
    }
    """

    def __init__(self, current: str | None) -> None:
        super().__init__()
        self.current = current or ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Show only this user's containers, queue and usage (empty: everyone):")
            yield Input(value=self.current, placeholder="user name", id="user-filter")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class DetailScreen(ModalScreen[None]):
    """Every field of one container; escape, q, enter or d closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
        Binding("d", "close", "Close", show=False),
        Binding("enter", "close", "Close", show=False),
    ]
    DEFAULT_CSS = """
    DetailScreen { align: center middle; }
    DetailScreen > Vertical {
        width: 100; max-width: 95%; height: auto; max-height: 90%;
        border: round $accent; background: $surface; padding: 1 2;
    }
    """

    def __init__(self, title: str, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.pairs = pairs

    def compose(self) -> ComposeResult:
        width = max(len(label) for label, _ in self.pairs) + 2
        text = Text()
        for label, value in self.pairs:
            lines = value.splitlines() or [""]
            text.append(label.ljust(width), style="bold")
            text.append(lines[0] + "\n")
            for more in lines[1:]:
                text.append(" " * width + more + "\n")
        with Vertical():
            yield Label(Text(self.title_text, style="bold"))
            yield Static(text, id="detail")

    def action_close(self) -> None:
        self.dismiss(None)


class DashboardApp(App[None]):
    """The live dashboard (see the module docstring).

    Args:
        fetch: returns an overview; called in a worker thread. Raising shows the error.
        interval: seconds between refreshes.
        view: the sort column and user filter to start with.
    """

    TITLE = "ds01 dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "cycle_sort", "Sort"),
        Binding("u", "filter_user", "Filter user"),
        Binding("d", "detail", "Detail"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("q", "quit", "Quit"),
    ]
    CSS = """
    #title { text-style: bold; }
    #status { color: $text-muted; }
    #status.error { color: $error; text-style: bold; }
    DataTable { border: round $primary; height: auto; }
    DataTable:focus { border: round $accent; }
    #devices { max-height: 40%; }
    #containers { height: 1fr; min-height: 8; }
    #bottom { height: auto; max-height: 35%; }
    #queue, #users { width: 1fr; max-height: 100%; }
    #bottom.stacked { layout: vertical; max-height: 50%; }
    #bottom.stacked > DataTable { width: 100%; max-height: 50%; }
    #reservations { max-height: 25%; }
    """

    def __init__(self, fetch: Fetch, *, interval: float = 2.0, view: View | None = None) -> None:
        super().__init__()
        self.fetch = fetch
        self.interval = interval
        self.view = view or View()
        self.overview: Mapping[str, Any] | None = None
        self.frame: Frame | None = None
        self.error: str | None = None
        self.loaded_at: float | None = None  # time.time() of the overview shown
        self.refreshes = 0  # overviews received
        self._fetching = False
        self._shown: dict[str, Table] = {}

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("ds01 dashboard: connecting to ds01d…", id="title")
        yield Static("", id="usage")
        yield Static("", id="status")
        yield DataTable(id="devices", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="containers", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="bottom"):
            yield DataTable(id="queue", cursor_type="row")
            yield DataTable(id="users", cursor_type="row")
        yield DataTable(id="reservations", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.table("containers").focus()
        self.action_refresh_now()
        self.set_interval(self.interval, self.action_refresh_now)

    def table(self, table_id: str) -> DataTable[Text]:
        return self.query_one(f"#{table_id}", DataTable)

    # -- data ------------------------------------------------------------------------------

    def action_refresh_now(self) -> None:
        """Fetch an overview in a background thread, unless a fetch is still out.

        A daemon thread of its own, not a textual thread worker: those run on asyncio's
        default executor, which the app waits for when it ends, so ``q`` would wait for a
        hung daemon's answer until the request timed out."""
        if self._fetching:
            return
        self._fetching = True
        threading.Thread(target=self._fetch_in_background, name="ds01-fetch", daemon=True).start()

    def _fetch_in_background(self) -> None:
        try:
            overview: Mapping[str, Any] | None = self.fetch()
            error: Exception | None = None
        except Exception as exc:  # shown in the status line, whatever it is
            overview, error = None, exc
        with contextlib.suppress(RuntimeError):  # the app ended meanwhile
            self.call_from_thread(self._received, overview, error)

    def _received(self, overview: Mapping[str, Any] | None, error: Exception | None) -> None:
        self._fetching = False
        if error is None and overview is not None:
            self.overview = overview
            self.error = None
            self.loaded_at = time.time()
            self.refreshes += 1
        else:
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            self.error = str(message)
        self.show()

    # -- drawing ---------------------------------------------------------------------------

    def show(self) -> None:
        """Draw the current overview through the current view, and the status line."""
        if self.overview is not None:
            self.frame = build_frame(self.overview, self.view)
            frame = self.frame
            # Text, never markup: names, notes and messages are users' and Slurm's words.
            self.query_one("#title", Static).update(Text(frame.title))
            self.query_one("#usage", Static).update(
                Text(f"GPUs {usage_bar(frame.usage, 40)}\n{frame.summary}")
            )
            for table_id, table in zip(TABLE_IDS, frame.tables, strict=True):
                self._fill(self.table(table_id), table)
            self._fit_bottom()
        self._show_status()

    def on_resize(self) -> None:
        self._fit_bottom()

    def _fit_bottom(self) -> None:
        """The queue and the quota panel side by side where both fit whole, else one above
        the other, each as wide as the screen: neither is ever cut."""
        if self.frame is None:
            return
        shown = (self._shown.get(table_id) for table_id in ("queue", "users"))
        needed = sum(_table_width(table) for table in shown if table is not None)
        self.query_one("#bottom").set_class(self.size.width < needed, "stacked")

    def _show_status(self) -> None:
        status = self.query_one("#status", Static)
        parts = []
        if self.frame is not None:
            parts += list(self.frame.notes)
        view = f"sort: {self.view.sort}"
        if self.view.user is not None:
            view += f"; filter: user {self.view.user} (u, then empty: everyone)"
        parts.append(view)
        if self.error is not None:
            when = (
                time.strftime("%H:%M:%S", time.localtime(self.loaded_at))
                if self.loaded_at is not None
                else None
            )
            parts.append(
                f"Refresh failed: {self.error} Retrying every {self.interval:g} s"
                + (f"; the data shown is from {when}." if when else ".")
            )
        status.update(Text("\n".join(parts)))
        status.set_class(self.error is not None, "error")

    def _fill(self, widget: DataTable[Text], table: Table) -> None:
        """Show ``table`` in ``widget``, keeping the highlighted row where it still exists.

        The same rows in the same order and columns as wide as before (a refresh where
        times and figures moved): only the cells that changed are updated, which costs next
        to nothing at 300 rows. Other changes (rows came or went, another sort or filter, a
        column wider or narrower) fill the table again, which measures every cell."""
        widget.border_title = table.title
        widget.border_subtitle = table.empty if not table.rows else None
        shown = self._shown.get(str(widget.id))
        if shown == table:
            return
        self._shown[str(widget.id)] = table
        if (
            shown is not None
            and shown.columns == table.columns
            and [r.key for r in shown.rows] == [r.key for r in table.rows]
            and _widths(shown) == _widths(table)
        ):
            keys = list(widget.columns)
            for old, new in zip(shown.rows, table.rows, strict=True):
                for index, (before, after) in enumerate(zip(old.cells, new.cells, strict=True)):
                    if before != after:
                        widget.update_cell(new.key, keys[index], Text(after))
            return
        selected = self.selected_key(widget)
        if shown is None or shown.columns != table.columns:
            widget.clear(columns=True)
            widget.add_columns(*table.columns)
        else:
            widget.clear()
        for row in table.rows:
            widget.add_row(*(Text(cell) for cell in row.cells), key=row.key)
        if selected is not None and selected in {r.key for r in table.rows}:
            widget.move_cursor(row=widget.get_row_index(selected), animate=False)

    @staticmethod
    def selected_key(widget: DataTable[Text]) -> str | None:
        """The key of the highlighted row, ``None`` when the table is empty."""
        if widget.row_count == 0:
            return None
        row = min(widget.cursor_row, widget.row_count - 1)
        key = widget.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value
        return None if key is None else str(key)

    # -- keys ------------------------------------------------------------------------------

    def action_cycle_sort(self) -> None:
        self.view = self.view.next_sort()
        self.show()

    def action_filter_user(self) -> None:
        def chosen(user: str | None) -> None:
            if user is not None:
                self.view = self.view.filtered(user)
                self.show()

        self.push_screen(UserFilterScreen(self.view.user), chosen)

    def action_detail(self) -> None:
        key = self.selected_key(self.table("containers"))
        if key is not None:
            self.show_detail(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "containers" and event.row_key.value is not None:
            self.show_detail(str(event.row_key.value))

    def show_detail(self, key: str) -> None:
        pairs = container_detail(self.overview or {}, key)
        if pairs is None:
            self.notify("That container is gone.", severity="warning")
            return
        self.push_screen(DetailScreen(f"Container {pairs[0][1]} of {pairs[1][1]}", pairs))


__all__ = ["DashboardApp", "DetailScreen", "UserFilterScreen"]
