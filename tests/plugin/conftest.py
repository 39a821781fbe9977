"""The editor-agnostic plug-in code (plugin/common/, GIMP's flow and parts) against a real server,
with a fake editor standing in only for the editor's pixels.
"""
