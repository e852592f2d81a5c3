"""raftbench"""
