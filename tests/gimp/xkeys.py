"""Press keys in a window on an X display from the host, as a person would: find a top-level
window by its title, give it the keyboard focus and send key presses through the XTEST
extension. Plain ctypes over libX11 and libXtst (installed with Xvfb), so tests can answer a
dialog that another process (a GIMP plug-in) shows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

XK = {"Return": 0xFF0D, "Escape": 0xFF1B}
_REVERT_TO_PARENT = 2
_IS_VIEWABLE = 2


class _Attributes(ctypes.Structure):
    # XWindowAttributes up to map_state; the rest is room for what follows it
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int),
                ("height", ctypes.c_int), ("border_width", ctypes.c_int),
                ("depth", ctypes.c_int), ("visual", ctypes.c_void_p),
                ("root", ctypes.c_ulong), ("class_", ctypes.c_int),
                ("bit_gravity", ctypes.c_int), ("win_gravity", ctypes.c_int),
                ("backing_store", ctypes.c_int), ("backing_planes", ctypes.c_ulong),
                ("backing_pixel", ctypes.c_ulong), ("save_under", ctypes.c_int),
                ("colormap", ctypes.c_ulong), ("map_installed", ctypes.c_int),
                ("map_state", ctypes.c_int), ("rest", ctypes.c_byte * 128)]


#: Xlib's error handler: int (*)(Display *, XErrorEvent *)
_ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


@_ERROR_HANDLER
def _ignore_x_error(display: int, event: int) -> int:
    """A window that closes between XQueryTree and the calls that read it (a dialog going
    away) makes a BadWindow error; Xlib's default handler would print it and call exit(1),
    ending the whole test run without a word. The calls report the failure in their return
    value instead, and the window is skipped."""
    return 0


class XDisplay:
    def __init__(self, name: str) -> None:
        self.x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
        self.x11.XSetErrorHandler.argtypes = [_ERROR_HANDLER]
        self.x11.XSetErrorHandler.restype = ctypes.c_void_p
        self.x11.XSetErrorHandler(_ignore_x_error)
        self.xtst = ctypes.CDLL(ctypes.util.find_library("Xtst") or "libXtst.so.6")
        self.x11.XOpenDisplay.restype = ctypes.c_void_p
        self.x11.XDefaultRootWindow.restype = ctypes.c_ulong
        self.x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        self.x11.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong,
                                        ctypes.POINTER(ctypes.c_ulong),
                                        ctypes.POINTER(ctypes.c_ulong),
                                        ctypes.POINTER(ctypes.POINTER(ctypes.c_ulong)),
                                        ctypes.POINTER(ctypes.c_uint)]
        self.x11.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong,
                                        ctypes.POINTER(ctypes.c_char_p)]
        self.x11.XGetWindowAttributes.argtypes = [ctypes.c_void_p, ctypes.c_ulong,
                                                  ctypes.POINTER(_Attributes)]
        self.x11.XSetInputFocus.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int,
                                            ctypes.c_ulong]
        self.x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        self.x11.XKeysymToKeycode.restype = ctypes.c_ubyte
        self.x11.XFlush.argtypes = [ctypes.c_void_p]
        self.x11.XFree.argtypes = [ctypes.c_void_p]
        self.x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self.xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                                ctypes.c_ulong]
        self.display = self.x11.XOpenDisplay(name.encode())
        if not self.display:
            raise OSError(f"cannot open X display {name}")

    def close(self) -> None:
        self.x11.XCloseDisplay(self.display)

    def windows(self) -> dict[int, str]:
        """Viewable top-level windows and their titles."""
        root = self.x11.XDefaultRootWindow(self.display)
        root_ret, parent = ctypes.c_ulong(), ctypes.c_ulong()
        children = ctypes.POINTER(ctypes.c_ulong)()
        count = ctypes.c_uint()
        if not self.x11.XQueryTree(self.display, root, ctypes.byref(root_ret),
                                   ctypes.byref(parent), ctypes.byref(children),
                                   ctypes.byref(count)):
            return {}
        found = {}
        for i in range(count.value):
            window = children[i]
            attributes = _Attributes()
            if not self.x11.XGetWindowAttributes(self.display, window, ctypes.byref(attributes)):
                continue  # gone since XQueryTree (_ignore_x_error)
            if attributes.map_state != _IS_VIEWABLE:
                continue
            name = ctypes.c_char_p()
            if self.x11.XFetchName(self.display, window, ctypes.byref(name)) and name.value:
                found[window] = name.value.decode("utf-8", "replace")
                self.x11.XFree(name)
        if children:
            self.x11.XFree(children)
        return found

    def wait_for(self, title_part: str, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for window, title in self.windows().items():
                if title_part in title:
                    return window
            time.sleep(0.1)
        raise TimeoutError(f"no window titled '...{title_part}...' appeared")

    def press(self, window: int, key: str) -> None:
        self.x11.XSetInputFocus(self.display, window, _REVERT_TO_PARENT, 0)
        code = self.x11.XKeysymToKeycode(self.display, XK[key])
        self.xtst.XTestFakeKeyEvent(self.display, code, True, 0)
        self.xtst.XTestFakeKeyEvent(self.display, code, False, 0)
        self.x11.XFlush(self.display)

    def wait_gone(self, window: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while window in self.windows():
            if time.monotonic() > deadline:
                raise TimeoutError(f"window {window} is still open")
            time.sleep(0.1)


def answer(display: str, steps: list[tuple[str, float, str]], timeout: float = 60.0) -> None:
    """For each (title, delay, key): wait for a window whose title is `title` or starts with
    it, wait `delay` seconds (for it to settle), press `key`, and wait until it has closed."""
    x = XDisplay(display)
    try:
        for title, delay, key in steps:
            deadline = time.monotonic() + timeout
            window = None
            while window is None:
                window = next((w for w, t in x.windows().items() if t.startswith(title)), None)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no window titled '{title}...' appeared")
                time.sleep(0.1)
            time.sleep(delay)
            x.press(window, key)
            x.wait_gone(window, timeout)
    finally:
        x.close()
