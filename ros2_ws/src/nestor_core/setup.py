from setuptools import find_packages, setup

package_name = "nestor_core"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="nestor developers",
    maintainer_email="nestor@example.com",
    description="nestor's shared contract: domain types, gRPC stubs, ONNX policy runtime.",
    license="Apache-2.0",
)
