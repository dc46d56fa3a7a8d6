"""FAKE `SampleData` module (desktop Slicer's Modules/Scripted/SampleData/SampleData.py imports qt/ctk).

Only `SampleDataLogic.registerCustomSampleDataSource`, with the real signature (Slicer >= 5.0), so an unknown
keyword fails here as it would in Slicer; each call's arguments are recorded in `registered`.
"""

from __future__ import annotations

registered: list[dict] = []


class SampleDataLogic:
    @staticmethod
    def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,  # noqa: N802
                                       nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                       loadFileType="VolumeFile", loadFiles=None, loadFileProperties={},  # noqa: B006
                                       checksums=None):
        registered.append(dict(category=category, sampleName=sampleName, uris=uris, fileNames=fileNames,
                               nodeNames=nodeNames, customDownloader=customDownloader,
                               thumbnailFileName=thumbnailFileName, loadFileType=loadFileType, loadFiles=loadFiles,
                               loadFileProperties=loadFileProperties, checksums=checksums))
