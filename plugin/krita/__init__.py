"""The Krita adapter: the only part of the plug-in that imports `krita` and Qt.

qt.py Qt 5/6 shim · colour.py which colour spaces travel as they are and which are converted ·
document.py the Editor over a Krita document · controller.py the UI-thread side of connection
and jobs · actions.py the menu actions as functions (scripts and tests call them too) ·
docker.py the docker panel · settings_store.py settings in kritarc · extension.py the menu
and registration. Packaged, `restora/__init__.py` calls `extension.register()`.

Importing this package imports nothing from Krita: only its modules do.
"""
