"""Unmodified go-livepeer standalone transcoders as workers of the farm.

``livepeer -transcoder -orchAddr HOST:8935 -orchSecret SECRET`` registers with the node API's
``net.Transcoder/RegisterTranscoder`` gRPC stream (served next to HTTPS on the same port),
downloads each segment from the URL it is sent, and posts its renditions to
``/transcodeResults``. A bridge consumes the cluster's transcode queues on the node process with
the attached transcoders' total capacity and pushes each job to one of them.
"""
