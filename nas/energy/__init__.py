"""nas.energy"""
